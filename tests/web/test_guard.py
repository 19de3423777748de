"""Headers, limits and error pages on every answer of the web side."""

from __future__ import annotations

import logging

from pipeline.web.guard import redacted


def test_every_answer_carries_the_security_headers(client) -> None:
    for path in ("/", "/nope", "/static/site.css"):
        response = client.get(path)
        assert "script-src" not in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_errors_are_plain_pages(client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert "There is nothing at this address." in response.text
    assert "Traceback" not in response.text


def test_a_body_over_the_limit_is_refused_before_it_is_read(client, settings) -> None:
    too_big = b"x" * (settings.web.max_body_bytes + 1)
    assert client.post("/", content=too_big).status_code == 413


def test_tokens_are_cut_short_in_the_log(client, caplog) -> None:
    token = "A" * 43
    with caplog.at_level(logging.INFO, logger="newsletter.web"):
        client.get(f"/u/{token}")
    assert token not in caplog.text
    assert "/u/AAAAAA…" in caplog.text
    assert redacted(f"/p/{token}/data") == "/p/AAAAAA…/data"


def test_a_body_over_the_limit_without_a_length_is_refused(client, settings) -> None:
    def chunks():
        for _ in range(settings.web.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    answer = client.post("/subscribe", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413


def test_the_csrf_cookie_is_secure_over_https_only(app) -> None:
    from starlette.testclient import TestClient

    for base, secure in (("https://report.example.org", True), ("http://127.0.0.1:8025", False)):
        with TestClient(app, base_url=base) as client:
            cookie = client.get("/subscribe").headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert ("Secure" in cookie) is secure
