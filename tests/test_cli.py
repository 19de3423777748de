"""The command line: every command documented, errors as one line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import parser as _parser

from .conftest import ROOT, SAMPLE, point_at


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


# ---------------------------------------------------------------- one line, exit 2, whatever the input


@pytest.mark.parametrize("args", [
    ("logs", "99999999999999999999"), ("send", "--resume", "9223372036854775808"), ("send", "--pause", "0"),
    ("send", "--cancel", "-3"), ("send", "--retry-failed", "1e3"), ("schedule", "cancel", "18446744073709551616"),
    ("schedule", "move", "99999999999999999999", "--at", "2030-01-01 09:00"),
])
def test_a_send_id_no_database_can_hold_is_a_usage_error(settings, run_cli, args: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_cli(*args)
    assert exit_.value.code == 2


def test_a_database_file_that_is_not_a_database_is_one_line(project: Path, settings, run_cli) -> None:
    (project / "newsletter.db").write_text("these are notes, not a database\n", encoding="utf-8")
    for args in (("logs",), ("subscribers", "list"), ("schedule", "list"), ("send", "--resume", "1")):
        code, out, err = run_cli(*args)
        assert code == 2 and out == "", args
        assert err == f"newsletter: error: cannot open database sqlite:///{project / 'newsletter.db'}: file is not a " \
                      "database\n", args


def test_an_unreachable_postgresql_is_one_line(project: Path, settings, run_cli) -> None:
    from tests.pgcluster import free_port

    url = f"postgresql+psycopg://newsletter@127.0.0.1:{free_port()}/newsletter"  # nothing listens there
    point_at(project / "newsletter.toml", url)
    for args in (("logs",), ("send", SAMPLE, "--now", "--offline", "--no-progress")):
        code, out, err = run_cli(*args)
        assert code == 2 and out == "", args
        assert err.startswith(f"newsletter: error: cannot open database {url}: ") and err.count("\n") == 1, err
        assert "Connection refused" in err or "connection failed" in err, err


def test_an_unknown_send_in_json_prints_nothing_on_stdout(settings, store, run_cli) -> None:
    code, out, err = run_cli("logs", "999", "--format", "json")
    assert (code, out) == (2, "") and "no send 999" in err


@pytest.mark.parametrize("args", [("logs",), ("schedule", "list")])
def test_every_list_honours_format(settings, store, run_cli, args: tuple[str, ...]) -> None:
    assert run_cli("schedule", SAMPLE, "--at", "2030-06-01 09:00", "--offline")[0] == 0
    code, out, _ = run_cli(*args, "--format", "json")
    assert code == 0 and [row["id"] for row in json.loads(out)] == [1]
    code, out, _ = run_cli(*args, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [row["id"] for row in rows] == ["1"] and rows[0]["status"] == "scheduled"
