"""The whole loop over loopback HTTP: a send of 2,000 through the emulator, whose webhooks reach the web app
under uvicorn, signed with the keys the emulator made, read from the environment as ``newsletter serve`` does.

After the send and its webhooks settle, the suppressions are exactly the emulator's hard bounces and
complaints, row for row, and every delivery row holds the provider's last word on it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from pipeline import send
from pipeline.config import Settings, load_settings
from pipeline.emulator import run_emulator_in_thread
from pipeline.emulator.server import bind
from pipeline.emulator.webhooks import Outcome, WebhookPlan
from pipeline.store import Store
from pipeline.store.events import recorded
from pipeline.store.tables import deliveries, subscribers, suppressions
from pipeline.web.app import create_app

from ..test_providers_emulator import KEY, KEY_VARIABLES, _for
from ..test_send import _audience, _edition, _many, _start

# 2,000 where the events come in batches (SendGrid) and where each comes alone (Postmark); fewer for the
# other two one-event-per-request providers, which take the same path as Postmark.
AUDIENCES = {"sendgrid": 2000, "postmark": 2000, "mailgun": 400, "resend": 400}


@contextmanager
def serving(settings: Settings, store: Store, sock: socket.socket) -> Iterator[None]:
    """The web app under uvicorn in a thread, on an already listening socket."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store), http="h11", lifespan="off",
                                           access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the web app did not start"
        thread.join(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize("provider", list(AUDIENCES))
def test_suppressions_equal_the_emulators_bounces_and_complaints(provider: str, project: Path, settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sock = bind("127.0.0.1", 0)
    web_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    plan = WebhookPlan(url=f"{web_url}/webhooks", bounce_rate=0.04, soft_bounce_rate=0.03, complaint_rate=0.02,
                       seed=11)
    with run_emulator_in_thread(keys=dict.fromkeys(KEY_VARIABLES, KEY), webhooks=plan) as emulator:
        for name, value in emulator.webhooks.keys.environment().items():
            monkeypatch.setenv(name, value)
        served = _for(load_settings(project / "newsletter.toml"), provider, emulator.url)
        store = Store.from_settings(served)
        try:
            with serving(served, store, sock):
                _audience(store, project, _many(AUDIENCES[provider]))
                summary = asyncio.run(send.run_send(store, served, _start(store, served, _edition(project, served))))
                assert summary.counts == {"sent": AUDIENCES[provider]}
                posted = emulator.wait_for_webhooks(timeout=120)
            outcomes = emulator.webhook_outcomes()
            _assert_loop_closed(store, outcomes, posted, AUDIENCES[provider])
        finally:
            store.dispose()


def _assert_loop_closed(store: Store, outcomes: list[Outcome], posted: dict[str, Any], audience: int) -> None:
    assert posted["given_up"] == 0 and posted["retried"] == 0
    decided = {outcome.email: outcome.kind for outcome in outcomes}
    assert len(decided) == audience == len(outcomes)
    expected = {(email, "bounced") for email, kind in decided.items() if kind == "bounced"}
    expected |= {(email, "complained") for email, kind in decided.items() if kind == "complained"}
    assert {kind for kind in decided.values()} == {"delivered", "bounced", "soft_bounced", "complained"}
    with store.read() as connection:
        suppressed = set(connection.execute(select(suppressions.c.email_key, suppressions.c.reason)).all())
        statuses = dict(connection.execute(select(subscribers.c.email_key, subscribers.c.status)).all())
        words = dict(connection.execute(select(deliveries.c.email, deliveries.c.event)).all())
        counts = dict(connection.execute(select(subscribers.c.email_key, subscribers.c.soft_bounces)).all())
    assert suppressed == expected
    assert {email for email, status in statuses.items() if status != "active"} == {email for email, _ in expected}
    assert words == decided  # the provider's last word on every row: a complaint comes after its delivery
    assert {email for email, count in counts.items() if count} == {e for e, k in decided.items() if k == "soft_bounced"}
    events = recorded(store)
    assert all(event.matched for event in events)
    assert len(events) == audience + sum(kind == "complained" for kind in decided.values())
