"""The web side in-process: the sample project's app over its real SQLite store, through Starlette's TestClient."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from pipeline.web.app import create_app


@pytest.fixture
def app(settings, store):
    return create_app(settings, store)


@pytest.fixture
def client(app):
    # base_url's scheme and host, so that Secure cookies and same-origin checks behave as in production.
    with TestClient(app, base_url="https://report.example.org", raise_server_exceptions=False) as client:
        yield client


def csrf_of(html: str) -> str:
    """The CSRF token of a page's form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found[1]
