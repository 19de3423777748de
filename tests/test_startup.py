"""Start-up: help and ``config show`` load none of the heavy libraries the commands that do work need.

Each case runs the command in a fresh interpreter, as a user does, through a wrapper that calls the
CLI's ``main`` and then prints the names of every module the process had loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SAMPLE

MODULES = "--- modules ---"
WRAPPER = f"""
import sys

from pipeline.cli import main

try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help exits from inside argparse
    code = exc.code
print({MODULES!r})
print("\\n".join(sorted(sys.modules)))
sys.exit(code)
"""
# What the commands that build, check, send or serve load; none of it is needed to print help or the settings.
HEAVY = ("sqlalchemy", "alembic", "mjml", "premailer", "cssutils", "jinja2", "markdown_it", "httpx", "httpcore",
         "lxml", "bs4", "apscheduler", "starlette", "uvicorn", "playwright", "psycopg", "orjson", "tqdm",
         "limits", "asyncio")
# --help does not read the settings at all.
SETTINGS = ("pydantic", "pydantic_core", "email_validator", "tomli_w", "pipeline.config")


def _run(project: Path, *args: str) -> tuple[str, set[str]]:
    """Run ``newsletter ARGS`` in the project; its output, and the modules it had loaded when it was done."""
    result = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=project, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    output, marker, modules = result.stdout.partition(MODULES + "\n")
    assert marker, result.stdout
    return output, set(modules.split())


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` loaded, as packages with any of their submodules."""
    return sorted(name for name in names if any(module == name or module.startswith(name + ".")
                                                 for module in modules))


@pytest.mark.parametrize("args", [("--help",), ("send", "--help"), ("subscribers", "list", "--help"),
                                  ("schedule", "--help"), ("serve", "--help")], ids=" ".join)
def test_help_loads_no_heavy_module_and_no_settings(project: Path, args: tuple[str, ...]) -> None:
    output, modules = _run(project, *args)
    assert output.startswith("usage: newsletter")
    assert "pipeline.cli.build" in modules  # the wrapper did see the command's own modules
    assert _loaded(modules, HEAVY + SETTINGS) == []


def test_help_lists_every_command(project: Path) -> None:
    output, _ = _run(project, "--help")
    for command in ("build", "preview", "check", "config", "send", "logs", "subscribers", "schedule", "run",
                    "serve", "users", "emulator"):
        assert f"    {command} " in output or f"    {command}\n" in output, command


def test_choices_are_listed_without_the_store(project: Path) -> None:
    output, modules = _run(project, "logs", "--help")
    assert "queued,sending,sent,failed,uncertain" in output
    output, modules = _run(project, "subscribers", "unsubscribe", "--help")
    assert "unsubscribed,bounced,complained,manual,provider" in output
    assert _loaded(modules, HEAVY) == []


def test_config_show_loads_the_settings_and_nothing_heavy(project: Path) -> None:
    output, modules = _run(project, "config", "show")
    assert "[publication]" in output and "[database]" in output
    assert "pipeline.config" in modules
    assert _loaded(modules, HEAVY) == []


def test_build_still_loads_what_it_needs(project: Path) -> None:
    output, modules = _run(project, "build", SAMPLE)
    assert f"built {SAMPLE} into" in output
    assert (project / "build" / SAMPLE / "email.html").is_file()
    assert {"jinja2", "premailer", "mjml"} <= {module.split(".")[0] for module in modules}
