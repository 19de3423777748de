"""Pre-flight checks on real editions: disclaimers, content, images, size, link syntax, the gate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from pipeline.checks import Report, check_edition, require_passing
from pipeline.config import Settings, load_settings
from pipeline.errors import ChecksFailed
from pipeline.prepare import prepare
from pipeline.render import Edition

from .conftest import SAMPLE, write_draft

AUTHOR_DISCLAIMER = ("This article represents his own personal opinion: "
                     "he alone is responsible for the entirety of its contents.")
FRONT = "subject: Checks\npreheader: A short preheader\ndate: 2024-03-01"
SIGNOFF = f"\n\n[SIGNOFF]\n\nJoe\n\nJoe Bloggs is an editor. {AUTHOR_DISCLAIMER}\n"


def _edition(project: Path, settings: Settings, body: str, front: str = FRONT, name: str = "2024-03-01-c") -> Edition:
    return prepare(write_draft(project, name, front, body), settings)


def _check(edition: Edition, settings: Settings, *, offline: bool) -> Report:
    """The checks as a command runs them: the coroutine, in an event loop of its own."""
    return asyncio.run(check_edition(edition, settings, offline=offline))


def _messages(report, check: str | None = None, severity: str | None = None) -> list[str]:
    return [f"{p.location}: {p.message}" for p in report.problems
            if (check is None or p.check == check) and (severity is None or p.severity == severity)]


@pytest.fixture
def sample(project: Path, settings: Settings) -> Edition:
    return prepare(project / "drafts" / SAMPLE, settings)


def test_the_sample_passes_offline_with_no_errors(sample: Edition, settings: Settings) -> None:
    report = _check(sample, settings, offline=True)
    assert report.ok, _messages(report, severity="error")
    assert {link.result for link in report.links} == {"skipped"}
    assert not _messages(report, "disclaimers")


def test_disclaimer_missing_from_the_html_only(sample: Edition, settings: Settings) -> None:
    edition = dataclasses.replace(sample, email_html=sample.email_html.replace("he alone is responsible", "he is"))
    errors = _messages(_check(edition, settings, offline=True), "disclaimers", "error")
    assert errors == ["email.html: required disclaimer missing from the visible text of email.html: "
                      "“This article represents his own personal opinion: he alone is respons…”"]


def test_disclaimer_missing_from_the_text_only(sample: Edition, settings: Settings) -> None:
    edition = dataclasses.replace(sample, email_txt=sample.email_txt.replace("Joseph Webster", "Joe").replace(
        "represents his own personal opinion", "is his"))
    errors = _messages(_check(edition, settings, offline=True), "disclaimers", "error")
    assert len(errors) == 1 and errors[0].startswith("email.txt: required disclaimer missing from the email.txt")


def test_disclaimer_only_inside_a_hidden_element_is_missing(project: Path, settings: Settings) -> None:
    """A template that hides the footer (display:none) fails, though the text is in the file."""
    template = project / "templates" / "default" / "email.mjml.j2"
    text = template.read_text(encoding="utf-8")
    template.write_text(text.replace('<div class="footer" data-part="footer">',
                                     '<div class="footer" data-part="footer" style="display:none">'), encoding="utf-8")
    edition = prepare(project / "drafts" / SAMPLE, settings)
    assert settings.publication.footer in edition.email_html
    errors = _messages(_check(edition, settings, offline=True), "disclaimers", "error")
    assert any("required disclaimer missing from the visible text of email.html: “The China-Russia Report is" in e
               for e in errors)
    assert any("postal address missing from the visible text" in e for e in errors)
    assert any("no visible unsubscribe link" in e for e in errors)


def test_disclaimer_in_a_comment_or_attribute_does_not_count(sample: Edition, settings: Settings) -> None:
    html = sample.email_html.replace(AUTHOR_DISCLAIMER, "")
    html = html.replace("</body>", f'<!-- {AUTHOR_DISCLAIMER} --><img alt="{AUTHOR_DISCLAIMER}"></body>')
    report = _check(dataclasses.replace(sample, email_html=html), settings, offline=True)
    assert any("required disclaimer missing" in m for m in _messages(report, "disclaimers"))


def test_disclaimer_match_ignores_case_and_white_space(sample: Edition, settings: Settings) -> None:
    html = sample.email_html.replace(AUTHOR_DISCLAIMER, AUTHOR_DISCLAIMER.upper().replace(" ", "\n   "))
    report = _check(dataclasses.replace(sample, email_html=html), settings, offline=True)
    assert not _messages(report, "disclaimers")


def test_content_leftovers_empty_sections_and_repeats(project: Path, settings: Settings) -> None:
    body = ("Lede TK.\n\n## One\n\n## Two\n\nA paragraph said twice.\n\nA paragraph said twice.\n\n"
            "TODO: fix. Lorem ipsum dolor. A todo list is fine." + SIGNOFF)
    report = _check(_edition(project, settings, body), settings, offline=True)
    assert _messages(report, "content", "error") == [
        "draft.md:6: left-over placeholder 'TK'",
        "draft.md:16: left-over placeholder 'TODO'",
        "draft.md:16: left-over placeholder 'Lorem ipsum'",
        "draft.md:8: section 1) 'One' is empty",
        "draft.md:14: paragraph repeated twice in a row",
    ]


def test_missing_preheader_and_long_subject_are_warnings(project: Path, settings: Settings) -> None:
    front = f"subject: {'A very long subject' * 6}\ndate: 2024-03-01"
    report = _check(_edition(project, settings, "Hello." + SIGNOFF, front=front), settings, offline=True)
    warnings = _messages(report, "content", "warning")
    assert any("no preheader" in w for w in warnings)
    assert any(w.startswith("draft.md:2: the subject is 114 characters long") for w in warnings)
    assert report.ok


def test_images_alt_width_size(project: Path, settings: Settings) -> None:
    folder = write_draft(project, "2024-03-01-c", FRONT, "![](images/a.png)\n\n[![](images/b.png)](https://www.ft.com/)"
                         + SIGNOFF)
    (folder / "images").mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(Path(__file__).parent / "data" / "pixel.png", folder / "images" / name)
    (folder / "images" / "b.png").write_bytes((folder / "images" / "b.png").read_bytes() + b"\0" * 300_000)
    report = _check(prepare(folder, settings), settings, offline=True)
    messages = _messages(report, "images")
    assert any(m.startswith("draft.md:6: image https://report.example.org/assets/2024-03-01-c/images/a.png has an "
                            "empty alt") for m in messages)
    assert any(m.startswith("draft.md:8: linked image") and "empty alt" in m for m in _messages(report, "images",
                                                                                                    "error"))
    assert any("images/b.png is 293 KB (over 200 KB)" in m for m in messages)


def test_every_svg_image_is_an_error(project: Path, settings: Settings, run_cli) -> None:
    body = "Lede.\n\n![A chart](images/chart.svg)\n\n![A map](https://maps.example.net/world.SVG?v=2)\n" + SIGNOFF
    folder = write_draft(project, "2024-03-01-c", FRONT, body)
    (folder / "images").mkdir()
    (folder / "images" / "chart.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
                                                 '<rect width="5" height="5"/></svg>', encoding="utf-8")
    report = _check(prepare(folder, settings), settings, offline=True)
    svg = [m for m in _messages(report, "images", "error") if "SVG" in m]
    assert svg == ["draft.md:8: image images/chart.svg: SVG is not shown by Gmail or Outlook; use PNG or JPEG",
                   "draft.md:10: image https://maps.example.net/world.SVG?v=2: SVG is not shown by Gmail or Outlook; "
                   "use PNG or JPEG"]
    code, out, err = run_cli("check", "2024-03-01-c", "--offline")
    assert code == 1 and "SVG is not shown by Gmail or Outlook" in out + err


def test_relative_image_and_missing_width_in_a_template(sample: Edition, settings: Settings) -> None:
    html = sample.email_html.replace("</body>", '<img src="logo.png" alt="Logo"></body>')
    report = _check(dataclasses.replace(sample, email_html=html), settings, offline=True)
    assert "template: image src 'logo.png' is relative: publish it under asset_base_url" in _messages(
        report, "images", "error")
    assert "template: image logo.png declares no width (Outlook shows it at full size)" in _messages(report, "images")


def test_size_limits(sample: Edition, settings: Settings) -> None:
    size = len(sample.email_html.encode())
    tight = settings.model_copy(update={"checks": settings.checks.model_copy(update={"max_html_bytes": size - 1})})
    assert any("over max_html_bytes" in m for m in _messages(_check(sample, tight, offline=True), "size",
                                                                "error"))
    near = settings.model_copy(update={"checks": settings.checks.model_copy(update={"max_html_bytes": size + 100})})
    assert _messages(_check(sample, near, offline=True), "size", "warning")
    big_style = sample.email_html.replace("</head>", "<style>" + ".x{color:red}" * 1500 + "</style></head>")
    report = _check(dataclasses.replace(sample, email_html=big_style), settings, offline=True)
    assert any("Gmail drops blocks over 16,384" in m for m in _messages(report, "size", "error"))


def test_link_syntax(project: Path, settings: Settings) -> None:
    body = ("[a](http://www.ft.com/) [c](https://www.example.com/story) "
            "[d](http://127.0.0.1:8080/) [e](mailto:not-an-address) [f](mailto:editor@report.org) "
            "[g](https://www.ft.com/?token=abc123) [h](<>) [i](#nowhere)" + SIGNOFF)
    report = _check(_edition(project, settings, body), settings, offline=True)
    errors = _messages(report, "links", "error")
    assert "draft.md:6: placeholder domain in a link: https://www.example.com/story" in errors
    assert any(e.startswith("draft.md:6: link to a local or private address: http://127.0.0.1:8080/") for e in errors)
    assert any(e.startswith("draft.md:6: malformed mailto: link mailto:not-an-address") for e in errors)
    assert any("empty link" in e for e in errors)
    assert any("link to #nowhere has no target in email.html" in e for e in errors)
    assert not any("editor@report.org" in e for e in errors)
    assert "draft.md:6: plain http:// link (use https://): http://www.ft.com/" in _messages(report, "links", "warning")
    results = {link.url: link for link in report.links}
    assert results["https://www.ft.com/?token=abc123"].result == "skipped"
    assert results["{{ unsubscribe_url }}"].result == "skipped"


def test_javascript_link_in_a_template_is_an_error(sample: Edition, settings: Settings) -> None:
    """markdown-it already refuses javascript: in drafts; a template could still carry one."""
    html = sample.email_html.replace("</body>", '<a href="javascript:alert(1)">x</a></body>')
    report = _check(dataclasses.replace(sample, email_html=html), settings, offline=True)
    assert "javascript:alert(1): javascript: link: javascript:alert(1)" in _messages(report, "links", "error")


def test_allow_hosts_permits_a_local_staging_host(project: Path, settings: Settings) -> None:
    allowed = settings.model_copy(update={"checks": settings.checks.model_copy(update={"allow_hosts": ("127.0.0.1",)})})
    report = _check(_edition(project, settings, "[d](https://127.0.0.1:8443/)" + SIGNOFF), allowed,
                           offline=True)
    assert not _messages(report, "links", "error")


def test_gate_refuses_errors_unless_forced_with_a_reason(project: Path, settings: Settings) -> None:
    report = _check(_edition(project, settings, "TK" + SIGNOFF), settings, offline=True)
    with pytest.raises(ChecksFailed, match=r"1 check error\(s\), first: draft.md:6: left-over placeholder"):
        require_passing(report)
    with pytest.raises(ChecksFailed, match="needs --reason"):
        require_passing(report, force=True)
    override = require_passing(report, force=True, reason="TK is the company's name")
    assert override is not None and override.reason == "TK is the company's name" and len(override.errors) == 1


def test_check_command_text_and_json(project: Path, run_cli) -> None:
    code, out, err = run_cli("check", SAMPLE, "--offline")
    assert code == 0, out + err
    assert out.strip().splitlines()[-1].startswith(f"{SAMPLE}: ok: 0 error(s)")
    code, out, err = run_cli("check", SAMPLE, "--offline", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["edition"] == SAMPLE
    assert set(data) == {"ok", "edition", "problems", "links"}
    assert all(set(link) == {"url", "status", "final_url", "result"} for link in data["links"])
    assert all(set(p) == {"check", "severity", "message", "location"} for p in data["problems"])


def test_check_command_exit_codes(project: Path, run_cli) -> None:
    text = (project / "drafts" / SAMPLE / "draft.md").read_text(encoding="utf-8")
    (project / "drafts" / SAMPLE / "draft.md").write_text(text.replace(AUTHOR_DISCLAIMER, "Views are his own."),
                                                          encoding="utf-8")
    code, out, err = run_cli("check", SAMPLE, "--offline")
    assert code == 1
    assert out.startswith("errors (2):") and "required disclaimer missing" in out
    assert run_cli("check", "no-such-draft", "--offline")[0] == 2


def test_settings_are_loaded_for_checks(project: Path) -> None:
    settings = load_settings(project / "newsletter.toml")
    assert settings.checks.link_concurrency == 128 and settings.checks.link_per_host == 4


@pytest.fixture
def local_site():
    """A real HTTP server on 127.0.0.1 that records every request it gets."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append((self.command, self.path))
            self.send_response(404 if self.path.startswith("/missing") else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = _answer

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_check_requests_links_but_never_tokenised_ones(project: Path, run_cli, local_site) -> None:
    base, hits = local_site
    settings_file = project / "newsletter.toml"
    settings_file.write_text(settings_file.read_text(encoding="utf-8").replace(
        "max_html_bytes = 102000", 'max_html_bytes = 102000\nallow_hosts = ["127.0.0.1"]'), encoding="utf-8")
    body = f"[fine]({base}/fine) and [gone]({base}/missing) and [mine]({base}/p?token=secret)" + SIGNOFF
    write_draft(project, "2024-03-01-c", FRONT, body)
    code, out, err = run_cli("check", "2024-03-01-c", "--format", "json")
    assert code == 1, err
    report = json.loads(out)
    results = {link["url"]: link["result"] for link in report["links"]}
    assert results[f"{base}/fine"] == "ok" and results[f"{base}/missing"] == "broken"
    assert results[f"{base}/p?token=secret"] == "skipped"
    assert {"check": "links", "severity": "error", "location": "draft.md:6",
            "message": f"broken link (404, Not Found): {base}/missing"} in report["problems"]
    assert sorted(hits) == [("HEAD", "/fine"), ("HEAD", "/missing")]
    # A second check answers the good link from the cache and asks the broken one again.
    hits.clear()
    assert run_cli("check", "2024-03-01-c")[0] == 1
    assert hits == [("HEAD", "/missing")]


def test_the_checks_are_awaited_inside_a_running_event_loop(project: Path, settings: Settings, local_site) -> None:
    """As a web endpoint awaits them: the links are requested in the caller's event loop, not one of their own."""
    base, hits = local_site
    allowed = settings.model_copy(update={"checks": settings.checks.model_copy(update={"allow_hosts": ("127.0.0.1",)})})
    edition = _edition(project, settings, f"[fine]({base}/fine)" + SIGNOFF)

    async def endpoint() -> Report:
        return await check_edition(edition, allowed, offline=False)

    report = asyncio.run(endpoint())
    assert {link.url: (link.result, link.status) for link in report.links}[f"{base}/fine"] == ("ok", 200)
    assert hits == [("HEAD", "/fine")]
