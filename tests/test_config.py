"""Settings: loaded from newsletter.toml, --config or NEWSLETTER_CONFIG, validated, shown masked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError

from .conftest import SECRET


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


def _numeric_settings() -> list[tuple[str, str]]:
    """(table, key) of every int or float setting."""
    found = []
    for table, section in Settings.model_fields.items():
        fields = getattr(section.annotation, "model_fields", {})
        for key, field in fields.items():
            if {field.annotation, *get_args(field.annotation)} & {int, float}:
                found.append((table, field.alias or key))
    return found


def _with_setting(project: Path, table: str, key: str, value: str) -> tuple[Path, int]:
    """The settings file with ``key = value`` set in ``[table]``; return it and that line's number."""
    path = project / "newsletter.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    if f"[{table}]" not in lines:
        lines.append(f"[{table}]")
    start = lines.index(f"[{table}]") + 1
    end = next((number for number in range(start, len(lines)) if lines[number].startswith("[")), len(lines))
    inside = [line for line in lines[start:end] if not line.startswith(f"{key} =")]
    lines[start:end] = [f"{key} = {value}", *inside]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, start + 1


def test_every_number_setting_is_known() -> None:
    assert ("provider", "batch_size") in _numeric_settings() and ("checks", "link_timeout") in _numeric_settings()
    assert ("schedule", "offline_checks") not in _numeric_settings()


@pytest.mark.parametrize(("table", "key"), _numeric_settings())
@pytest.mark.parametrize("value", ["true", "false"])
def test_a_boolean_is_not_a_number(project: Path, table: str, key: str, value: str) -> None:
    path, line = _with_setting(project, table, key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}:{line}: {table}.{key}: must be a number, not {value}"


def test_numbers_and_yes_no_settings_still_load(project: Path) -> None:
    path, _ = _with_setting(project, "provider", "batch_size", "7")
    _with_setting(project, "checks", "link_timeout", "3")  # an integer where a float is expected
    _with_setting(project, "schedule", "offline_checks", "false")
    settings = load_settings(path)
    assert settings.provider.batch_size == 7 and settings.checks.link_timeout == 3.0
    assert settings.schedule.offline_checks is False


@pytest.mark.parametrize(("text", "expected"), [
    ("[publicaton]\nname = 'x'\n", "unknown key 'publicaton'"),
    ("foo = 1\n", "unknown key 'foo'"),
    ("[paths.extra]\nx = 1\n", "unknown key 'paths.extra'"),
])
def test_an_unknown_top_level_key_or_table_names_its_line(project: Path, text: str, expected: str) -> None:
    path = project / "newsletter.toml"
    original = path.read_text(encoding="utf-8")
    if text.startswith("["):
        path.write_text(original + "\n" + text, encoding="utf-8")
        line = len(original.splitlines()) + 2
    else:
        path.write_text(text + original, encoding="utf-8")
        line = 1
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}:{line}: {expected}")


@pytest.mark.parametrize(("table", "key", "value"), [
    ("publication", "from", r'"Report <report@example.org>\r\nBcc: all@example.net"'),
    ("publication", "from", r'"Report\n <report@example.org>"'),
    ("publication", "reply_to", r'"editor@example.org\r\nBcc: all@example.net"'),
    ("publication", "name", r'"The Report\r\nBcc: all@example.net"'),
    ("publication", "name", r'"The Report\u0000"'),
    ("notify", "staff", r'["desk@example.org\nBcc: all@example.net"]'),
])
def test_header_settings_must_be_one_line(project: Path, table: str, key: str, value: str) -> None:
    path, line = _with_setting(project, table, key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert re.fullmatch(rf"{re.escape(str(path))}:{line}: {table}\.{key}: must be one line without control "
                        r"characters \(found U\+00(0D|0A|00)\)", message), message


@pytest.mark.parametrize("secret", ["a", "x" * 31, "é" * 15])
def test_a_short_signing_secret_is_refused_without_showing_it(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                              secret: str) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", secret)
    with pytest.raises(ConfigError) as caught:
        load_settings(project / "newsletter.toml")
    size = len(secret.encode())
    assert str(caught.value) == (f"the signing secret in NEWSLETTER_SECRET is {size} bytes long, it needs at "
                                 'least 32: make one with python3 -c "import secrets; '
                                 'print(secrets.token_urlsafe(32))"')


def test_a_short_secret_file_is_refused(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        run_cli) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("short-but-not-empty\n", encoding="utf-8")
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET_FILE", str(secret_file))
    code, out, err = run_cli("config", "show")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"newsletter: error: {secret_file}: the signing secret in the file named by "
                          "NEWSLETTER_SECRET_FILE is 19 bytes long, it needs at least 32")
    assert "short-but-not-empty" not in err


def test_a_long_enough_secret_is_taken(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert len(SECRET.encode()) >= 32
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    assert load_settings(project / "newsletter.toml").secret.get_secret_value() == SECRET  # type: ignore[union-attr]
    monkeypatch.delenv("NEWSLETTER_SECRET")
    (tmp_path / "secret").write_text(SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_SECRET_FILE", str(tmp_path / "secret"))
    assert load_settings(project / "newsletter.toml").secret.get_secret_value() == SECRET  # type: ignore[union-attr]
