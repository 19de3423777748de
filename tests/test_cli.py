"""The command line: every command documented, errors as one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from pipeline.cli import parser as _parser

from .conftest import ROOT, SAMPLE


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_help_text() -> None:
    commands = list(_commands(_parser()))
    expected = {("build",), ("preview",), ("check",), ("config",), ("config", "show"), ("send",), ("logs",),
                ("subscribers",), ("subscribers", "import"), ("subscribers", "list"), ("subscribers", "export"),
                ("subscribers", "unsubscribe")}
    assert expected <= {name for name, _ in commands}
    for name, parser in commands:
        assert parser.description, f"newsletter {' '.join(name)} has no description"
        for action in parser._actions:
            if action.option_strings or action.dest not in ("help",):
                assert action.help or isinstance(action, argparse._SubParsersAction), (name, action.dest)


def test_python_dash_m_runs_the_command(project: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline", "build", SAMPLE], cwd=project,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "email.html:" in result.stdout and "bytes" in result.stdout
    assert (project / "build" / SAMPLE / "email.html").is_file()


def test_usage_error_exits_2(run_cli) -> None:
    try:
        run_cli("frobnicate")
    except SystemExit as exc:
        assert exc.code == 2
    assert ROOT.exists()
