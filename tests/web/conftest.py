"""The web side in-process (the sample project's app through Starlette's TestClient) and for real (``live_server``:
``newsletter serve`` in a subprocess on a loopback port), both over a real SQLite store."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from pipeline.config import Settings, load_settings
from pipeline.store import Store
from pipeline.web.app import create_app
from tests.conftest import ROOT, SECRET, SECRET_VARIABLES


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


# The real server -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LiveServer:
    """``newsletter serve`` running in a subprocess on a copy of the sample project, and how to reach it."""

    url: str  # http://127.0.0.1:PORT, which is also the project's base_url: links in its mails lead here
    project: Path
    settings: Settings
    environment: dict[str, str]  # what a command run on this project needs (settings path, secret)
    process: subprocess.Popen[bytes]
    log: Path  # the server's stderr

    def newsletter(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a ``newsletter`` command on the served project, as an editor would in another terminal."""
        return subprocess.run([*NEWSLETTER, *args], cwd=self.project, env=self.environment, capture_output=True,
                              text=True, timeout=120, check=False)

    def local(self, url: str) -> str:
        """An address from a mail, checked to lead to this server."""
        assert url.startswith(self.url + "/"), f"{url} is not on {self.url}"
        return url


NEWSLETTER = [sys.executable, "-m", "pipeline"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def live_project(folder: Path, url: str) -> Path:
    """The sample project under ``folder``, published at ``url``: its mails link to the local server."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("templates", "drafts"):
        shutil.copytree(ROOT / name, folder / name)
    text = (ROOT / "newsletter.toml").read_text(encoding="utf-8")
    text, replaced = re.subn(r'(?m)^base_url = ".*"$', f'base_url = "{url}"', text)
    assert replaced == 1, "the sample's newsletter.toml has no base_url line"
    # The checks refuse links to a local address unless it is listed, as a staging site would be.
    text = text.replace("[checks]\n", '[checks]\nallow_hosts = ["127.0.0.1"]\n', 1)
    # Topics, so that the forms show their checkboxes; every test signs up from the same address.
    text += '\n[web]\ntopics = { policy = "Policy", economy = "Economy" }\nsignup_rate_ip = "1000/hour"\n'
    (folder / "newsletter.toml").write_text(text, encoding="utf-8")
    return folder


def _wait_until_answering(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError(f"newsletter serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url + "/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"newsletter serve did not answer at {url}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory):
    """The real server (uvicorn in its own process) over a real SQLite file, for one test module."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    folder = live_project(tmp_path_factory.mktemp("live") / "project", url)
    environment = {name: value for name, value in os.environ.items() if name not in SECRET_VARIABLES}
    environment |= {"NEWSLETTER_CONFIG": str(folder / "newsletter.toml"), "NEWSLETTER_SECRET": SECRET}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEWSLETTER_SECRET", SECRET)
        settings = load_settings(folder / "newsletter.toml")
    log = folder / "serve.log"
    with log.open("wb") as stderr:
        server = subprocess.Popen([*NEWSLETTER, "serve", "--port", str(port)], cwd=folder, env=environment,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_until_answering(server, url, log)
        yield LiveServer(url=url, project=folder, settings=settings, environment=environment, process=server,
                         log=log)
        died = server.poll()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert died is None, f"newsletter serve died during the tests ({died}):\n{log.read_text()}"


@pytest.fixture(scope="module")
def live_store(live_server: LiveServer):
    """The served project's store, the same SQLite file the server writes."""
    store = Store.from_settings(live_server.settings)
    yield store
    store.dispose()
