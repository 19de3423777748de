"""Newsletter pipeline: draft directory → responsive, CSS-inlined email → checks → send → delivery log."""

__version__ = "0.1.0"
