"""`newsletter build`: outputs written atomically; bad input is one clear line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from .conftest import SAMPLE, write_draft

GOOD_FRONT = "subject: A test edition\npreheader: Short and sweet\ndate: 2024-03-01"
GOOD_BODY = "Hello.\n\n## One\n\nFirst.\n\n## Two\n\nSecond.\n"


def test_build_writes_all_outputs_and_reports_size(project: Path, run_cli) -> None:
    code, out, err = run_cli("build", SAMPLE)
    assert code == 0, err
    folder = project / "build" / SAMPLE
    assert sorted(p.name for p in folder.iterdir()) == ["email.html", "email.txt", "manifest.json", "web.html"]
    size = (folder / "email.html").stat().st_size
    assert f"email.html: {size:,} bytes" in out
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sizes"]["email.html"] == size
    assert manifest["subject"] == "The Xi – Putin phone call and bilateral trade"
    assert len(manifest["content_hash"]) == 64
    assert {"href": "https://en.kremlin.ru/", "section": "1) Bilateral political ties",
            "text": "Telephone conversation with President of China Xi Jinping"} in manifest["links"]
    assert not [p for p in (project / "build").iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_out_option_and_draft_given_as_a_path(project: Path, run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli("build", str(project / "drafts" / SAMPLE), "--out", str(tmp_path / "elsewhere"))
    assert code == 0, err
    assert (tmp_path / "elsewhere" / "email.txt").is_file()


def test_out_refuses_to_replace_a_folder_that_is_not_a_build(project: Path, run_cli, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    code, out, err = run_cli("build", SAMPLE, "--out", str(precious))
    assert code == 2
    assert "refusing to replace" in err
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_images_are_published_under_the_asset_base_url(project: Path, run_cli) -> None:
    folder = write_draft(project, "2024-03-01-pictures", GOOD_FRONT, "![A map of the pipeline](images/map.png)\n")
    (folder / "images").mkdir()
    shutil.copy(Path(__file__).parent / "data" / "pixel.png", folder / "images" / "map.png")
    code, out, err = run_cli("build", "2024-03-01-pictures")
    assert code == 0, err
    built = project / "build" / "2024-03-01-pictures"
    html = (built / "email.html").read_text(encoding="utf-8")
    assert 'src="https://report.example.org/assets/2024-03-01-pictures/images/map.png"' in html
    assert 'alt="A map of the pipeline"' in html and 'width="4"' in html
    assert (built / "images" / "map.png").read_bytes() == (folder / "images" / "map.png").read_bytes()
    assert "[Image: A map of the pipeline]" in (built / "email.txt").read_text(encoding="utf-8")


def _write_raw(project: Path, name: str, data: bytes) -> None:
    folder = project / "drafts" / name
    folder.mkdir(parents=True)
    (folder / "draft.md").write_bytes(data)


def _break_template(project: Path) -> Path:
    """A template "broken" whose line 8 names an undefined variable, and a draft that uses it."""
    broken = project / "templates" / "broken"
    shutil.copytree(project / "templates" / "default", broken)
    lines = (broken / "email.mjml.j2").read_text(encoding="utf-8").splitlines()
    lines.insert(7, "{{ edition.no_such_thing }}")
    (broken / "email.mjml.j2").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return write_draft(project, "2024-03-01-bad", "subject: S\ntemplate: broken", GOOD_BODY)


def _scripted_svg(project: Path) -> None:
    folder = write_draft(project, "2024-03-01-bad", "subject: S", "Hi.\n\n![Chart](images/chart.svg)\n")
    (folder / "images").mkdir()
    (folder / "images" / "chart.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
                                                 "<script>alert(1)</script></svg>", encoding="utf-8")


def _bad_front(front: str):
    """Make the draft 2024-03-01-bad with this front matter and a good body."""
    return lambda project: write_draft(project, "2024-03-01-bad", front, GOOD_BODY)


BAD_DRAFTS = {
    "missing draft.md": (lambda p: (p / "drafts" / "2024-03-01-bad").mkdir(),
                         r"drafts/2024-03-01-bad/draft.md: missing draft.md"),
    "malformed YAML": (lambda p: write_draft(p, "2024-03-01-bad", "subject: [unclosed\ndate: 2024-03-01", GOOD_BODY),
                       r"draft.md:3: malformed YAML front matter"),
    "unknown key": (lambda p: write_draft(p, "2024-03-01-bad", "subject: S\nsubjet: typo", GOOD_BODY),
                    r"draft.md:3: unknown front-matter key 'subjet'"),
    "missing subject": (lambda p: write_draft(p, "2024-03-01-bad", "preheader: P", GOOD_BODY),
                        r"draft.md:1: missing required front-matter key 'subject'"),
    "unknown template": (lambda p: write_draft(p, "2024-03-01-bad", "subject: S\ntemplate: fancy", GOOD_BODY),
                         r"draft.md:3: unknown template 'fancy'"),
    "undefined variable": (_break_template,
                           r"templates/broken/email.mjml.j2:8: undefined template variable"),
    "missing image": (lambda p: write_draft(p, "2024-03-01-bad", "subject: S", "Hi.\n\n![Chart](images/chart.png)\n"),
                      r"draft.md:6: image file not found: images/chart.png"),
    "not UTF-8": (lambda p: _write_raw(p, "2024-03-01-bad", "---\nsubject: S\n---\nCaf\xe9\n".encode("latin-1")),
                  r"draft.md:4: not UTF-8 text"),
    "empty body": (lambda p: write_draft(p, "2024-03-01-bad", "subject: S", "\n  \n"),
                   r"draft.md:4: the body is empty"),
    "no front matter": (lambda p: _write_raw(p, "2024-03-01-bad", b"Just text\n"),
                        r"draft.md:1: missing front matter"),
    "no date": (lambda p: write_draft(p, "undated", "subject: S", GOOD_BODY), r"draft.md:1: no edition date"),
    "bad date": (lambda p: write_draft(p, "2024-03-01-bad", "subject: S\ndate: yesterday", GOOD_BODY),
                 r"draft.md:3: front-matter key 'date'"),
    "impossible date": (_bad_front("subject: S\ndate: 2024-02-30"),
                        r"draft.md:3: front-matter key 'date': 2024-02-30 is not a real date"),
    "impossible send_at": (_bad_front("subject: S\nsend_at: 2024-13-01 09:00:00"),
                           r"draft.md:3: front-matter key 'send_at': 2024-13-01 09:00:00 is not a real date"),
    "send_at in year 9999": (_bad_front("subject: S\nsend_at: 9999-12-31 23:59"),
                             r"draft.md:3: front-matter key 'send_at': 9999-12-31 23:59 is more than 10 years ahead"),
    "send_at in year 9999 with an offset": (
        _bad_front("subject: S\nsend_at: 9999-12-31 23:59:00-05:00"),
        r"draft.md:3: front-matter key 'send_at': 9999-12-31 23:59 is more than 10 years ahead"),
    "deeply nested": (_bad_front("subject: " + "[" * 5000 + "]" * 5000),
                      r"draft.md:2: front-matter key 'subject': nested more than 16 levels deep"),
    "key given twice": (_bad_front("subject: S\ndate: 2024-03-01\nsubject: T"),
                        r"draft.md:4: front-matter key 'subject' is given twice \(lines 2 and 4\)"),
    "svg with a script": (_scripted_svg, r"draft.md:6: image images/chart.svg has a <script> element"),
    "header in the subject": (_bad_front('subject: "Hi\\r\\nBcc: x@example.net"'),
                              r"draft.md:2: front-matter key 'subject': must be one line without control "
                              r"characters \(found U\+000D\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_DRAFTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(project: Path, run_cli, case: str) -> None:
    make, expected = BAD_DRAFTS[case]
    make(project)
    name = "undated" if case == "no date" else "2024-03-01-bad"
    code, out, err = run_cli("build", name)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("newsletter: error: "), err
    assert "Traceback" not in err
    assert re.search(expected, err), err
    assert not (project / "build").exists() or not any((project / "build").iterdir())


@pytest.mark.parametrize("content", ["", "[publication\n"])
def test_missing_or_invalid_settings_file(project: Path, run_cli, content: str) -> None:
    if content:
        (project / "newsletter.toml").write_text(content, encoding="utf-8")
    else:
        (project / "newsletter.toml").unlink()
    code, out, err = run_cli("build", SAMPLE)
    assert code == 2
    assert err.startswith("newsletter: error: newsletter.toml: ") and err.count("\n") == 1, err
    assert not (project / "build").exists()


def test_failed_build_leaves_the_previous_output_intact(project: Path, run_cli) -> None:
    write_draft(project, "2024-03-01-good", GOOD_FRONT, GOOD_BODY)
    assert run_cli("build", "2024-03-01-good")[0] == 0
    built = project / "build" / "2024-03-01-good"
    before = {path.name: path.read_bytes() for path in built.iterdir()}
    write_draft(project, "2024-03-01-good", GOOD_FRONT + "\ntemplate: missing", GOOD_BODY)
    assert run_cli("build", "2024-03-01-good")[0] == 2
    assert {path.name: path.read_bytes() for path in built.iterdir()} == before
    assert sorted(p.name for p in (project / "build").iterdir()) == ["2024-03-01-good"]


def _fake_previews(folder: Path) -> dict[str, bytes]:
    """Screenshots as `newsletter preview` leaves them (the real ones are tested in test_preview.py)."""
    from pipeline.preview import record_previews

    shots = {"desktop.png": b"\x89PNG desktop", "mobile.png": b"\x89PNG mobile"}
    for name, data in shots.items():
        (folder / name).write_bytes(data)
    record_previews((folder / "email.html").read_bytes(), [folder / name for name in shots], folder)
    return shots


def test_a_rebuild_keeps_previews_of_the_same_email(project: Path, run_cli) -> None:
    write_draft(project, "2024-03-01-good", GOOD_FRONT, GOOD_BODY)
    assert run_cli("build", "2024-03-01-good")[0] == 0
    built = project / "build" / "2024-03-01-good"
    shots = _fake_previews(built)
    assert run_cli("build", "2024-03-01-good")[0] == 0  # as the scheduler rebuilds when the send fires
    assert {name: (built / name).read_bytes() for name in shots} == shots
    assert (built / "previews.json").is_file()


def test_a_rebuild_of_a_changed_email_drops_the_stale_previews(project: Path, run_cli) -> None:
    write_draft(project, "2024-03-01-good", GOOD_FRONT, GOOD_BODY)
    assert run_cli("build", "2024-03-01-good")[0] == 0
    built = project / "build" / "2024-03-01-good"
    _fake_previews(built)
    write_draft(project, "2024-03-01-good", GOOD_FRONT, GOOD_BODY.replace("First.", "First, revised."))
    assert run_cli("build", "2024-03-01-good")[0] == 0
    assert sorted(p.name for p in built.iterdir()) == ["email.html", "email.txt", "manifest.json", "web.html"]


@pytest.mark.parametrize(("umask", "folders", "files"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)],
                         ids=["umask-022", "umask-027"])
def test_output_gets_the_usual_permissions(project: Path, run_cli, umask: int, folders: int, files: int) -> None:
    """Not mkdtemp's 0700: a web server running as another user must be able to read the build."""
    folder = write_draft(project, "2024-03-01-pictures", GOOD_FRONT, "![A map](images/map.png)\n")
    (folder / "images").mkdir()
    shutil.copy(Path(__file__).parent / "data" / "pixel.png", folder / "images" / "map.png")
    (folder / "images" / "map.png").chmod(0o600)
    previous = os.umask(umask)
    try:
        assert run_cli("build", "2024-03-01-pictures")[0] == 0
        assert run_cli("build", "2024-03-01-pictures")[0] == 0  # a rebuild swaps in a new folder
    finally:
        os.umask(previous)
    built = project / "build" / "2024-03-01-pictures"
    modes = {str(path.relative_to(built)): stat.S_IMODE(path.stat().st_mode) for path in [built, *built.rglob("*")]}
    assert modes == {".": folders, "images": folders, "images/map.png": files, "email.html": files,
                     "email.txt": files, "web.html": files, "manifest.json": files}
