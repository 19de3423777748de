"""Settings: loaded from newsletter.toml, --config or NEWSLETTER_CONFIG, validated, shown masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError


def test_relative_paths_resolve_against_the_settings_file(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = load_settings(project / "newsletter.toml")
    assert settings.paths.drafts == project / "drafts"
    assert settings.paths.build == project / "build"
    assert settings.checks.max_html_bytes == 102_000
    assert len(settings.checks.required_disclaimers) == 2


def test_environment_variable_names_the_file(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    moved = tmp_path / "conf" / "other.toml"
    moved.parent.mkdir()
    moved.write_text((project / "newsletter.toml").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(moved))
    assert load_settings().paths.templates == moved.parent / "templates"


def _broken(project: Path, old: str, new: str) -> Path:
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max_html_bytes = 102000", "max_html_bytes = 102000\nmax_htm_bytes = 5", "unknown key 'checks.max_htm_bytes'"),
        ("max_html_bytes = 102000", 'max_html_bytes = "big"', "checks.max_html_bytes"),
        ('timezone = "America/New_York"', 'timezone = "Mars/Olympus"', "unknown time zone 'Mars/Olympus'"),
        ('base_url = "https://report.example.org"', 'base_url = "report.example.org"', "publication.base_url"),
        ('from = "The China-Russia Report <report@example.org>"', 'from = "not an address"', "publication.from"),
        ('name = "The China-Russia Report"\n', "", "missing required key 'publication.name'"),
        ("[paths]", "[paths\n", "invalid TOML"),
    ],
)
def test_bad_settings_name_the_key(project: Path, old: str, new: str, expected: str) -> None:
    path = _broken(project, old, new)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_unknown_key_error_names_its_line(project: Path) -> None:
    path = _broken(project, "max_html_bytes = 102000", "max_html_bytes = 102000\nmax_htm_bytes = 5")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("max_htm_bytes"))
    with pytest.raises(ConfigError, match=rf"newsletter.toml:{line}: unknown key"):
        load_settings(path)


def test_missing_settings_file_is_a_one_line_error(tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli("--config", str(tmp_path / "absent.toml"), "config", "show")
    assert code == 2
    assert err.strip() == f"newsletter: error: {tmp_path / 'absent.toml'}: settings file not found " \
                          "(use --config PATH or NEWSLETTER_CONFIG)"
    assert "Traceback" not in err


def test_config_show_prints_effective_settings_with_secrets_masked(project: Path, run_cli) -> None:
    _broken(project, 'url = "sqlite:///newsletter.db"', 'url = "postgresql+psycopg://news:hunter2@127.0.0.1/news"')
    code, out, err = run_cli("config", "show")
    assert code == 0, err
    assert "hunter2" not in out
    assert "postgresql+psycopg://news:***@127.0.0.1/news" in out
    assert f'drafts = "{project / "drafts"}"' in out
    assert 'name = "The China-Russia Report"' in out
