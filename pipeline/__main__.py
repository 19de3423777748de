"""``python -m pipeline`` runs the ``newsletter`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
