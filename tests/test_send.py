"""Sending through the outbox: real SQLite file, real .eml files, real processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import func, select

from pipeline import send
from pipeline.config import Settings, load_settings
from pipeline.errors import ChecksFailed, SendBusy, SendError
from pipeline.mail import Batch, Outcome
from pipeline.messages import read_unsubscribe_token
from pipeline.prepare import prepare_and_write
from pipeline.store import Store, utcnow
from pipeline.store.tables import deliveries, sends
from pipeline.subscribers import import_subscribers, unsubscribe

from .conftest import SAMPLE, SECRET, parsed, part, sender_died, write_draft

FRONT = "subject: Hello {{ name }}\npreheader: A test\ndate: 2024-03-01"
BODY = ("Dear {{ name }},\n\nA [link](https://www.ft.com/).\n\n[SIGNOFF]\n\nJoe\n\n"
        "Joe is an editor. This article represents his own personal opinion: he alone is responsible for the "
        "entirety of its contents.\n")


def _audience(store: Store, folder: Path, people: list[tuple[str, str, str]]) -> None:
    path = folder / "audience.csv"
    path.write_text("email,name,tags,status\n" + "".join(f"{e},{n},{t},active\n" for e, n, t in people),
                    encoding="utf-8")
    report = import_subscribers(store, path)
    assert not report.rejected, report.rejected


def _many(count: int) -> list[tuple[str, str, str]]:
    return [(f"reader{number:05d}@example.net", f"Reader {number}", "policy") for number in range(count)]


def _edition(project: Path, settings: Settings, body: str = BODY, front: str = FRONT):
    folder = write_draft(project, "2024-03-01-hello", front, body)
    return prepare_and_write(folder, settings)


def _rows(store: Store, send_id: int) -> dict[str, int]:
    with store.begin() as connection:
        return dict(connection.execute(select(deliveries.c.status, func.count())
                                       .where(deliveries.c.send_id == send_id).group_by(deliveries.c.status)).all())


def _start(store: Store, settings: Settings, built) -> int:
    return send.create_send(store, settings, built.edition, built_path=str(built.folder))


def test_every_message_parses_strictly_with_its_own_values(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, [("ada@example.net", "Ada Lovelace", "policy"),
                               ("evil@example.net", "<script>alert(1)</script>", "policy"),
                               ("li@example.net", "李伟", "policy"), ("anon@example.net", "", "policy")])
    built = _edition(project, settings)
    send_id = _start(store, settings, built)
    summary = asyncio.run(send.run_send(store, settings, send_id))
    assert summary.status == "sent" and summary.counts == {"sent": 4}
    files = sorted((project / "outbox" / str(send_id)).glob("*.eml"))
    assert len(files) == 4
    seen_tokens = set()
    for path in files:
        message = parsed(path.read_bytes())
        assert message.get_content_type() == "multipart/alternative"
        html, text = part(message, "html"), part(message, "plain")
        to = message["To"].addresses[0]
        unsubscribe_header = message["List-Unsubscribe"]
        url = unsubscribe_header.split(">")[0].lstrip("<")
        assert url.startswith("https://report.example.org/u/") and url in html and url in text
        assert "mailto:editor@example.org?subject=unsubscribe" in unsubscribe_header
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Id"].strip() == '"The China-Russia Report" <the-china-russia-report.report.example.org>'
        assert message["Message-ID"].endswith("@example.org>")
        assert message["Subject"] == "Hello {{ name }}"
        token = url.rsplit("/", 1)[1]
        assert read_unsubscribe_token(settings, token) is not None and token not in seen_tokens
        seen_tokens.add(token)
        assert "https://report.example.org/archive/2024-03-01-hello/" in html
        if to.addr_spec == "evil@example.net":
            assert "Dear &lt;script&gt;alert(1)&lt;/script&gt;," in html and "<script>alert" not in html
            assert "Dear <script>alert(1)</script>," in text
        elif to.addr_spec == "li@example.net":
            assert "Dear 李伟," in html and to.display_name == "李伟"
        elif to.addr_spec == "anon@example.net":
            assert "Dear reader," in html
    assert read_unsubscribe_token(settings, "forged.token") is None


def test_audience_tag_suppressions_and_unsubscribed(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, [("a@example.net", "A", "policy"), ("b@example.net", "B", "energy"),
                               ("c@example.net", "C", "policy"), ("d@example.net", "D", "policy")])
    unsubscribe(store, "c@example.net")
    built = _edition(project, settings, front=FRONT + "\naudience: policy")
    send_id = _start(store, settings, built)
    summary = asyncio.run(send.run_send(store, settings, send_id))
    assert summary.counts == {"sent": 2}  # a and d; b lacks the tag, c unsubscribed
    assert sorted(p.name for p in (project / "outbox" / str(send_id)).glob("*.eml")) == ["1.eml", "2.eml"]


def test_a_second_send_of_the_same_edition_reaches_nobody_twice(project: Path, settings: Settings,
                                                                 store: Store) -> None:
    _audience(store, project, _many(5))
    built = _edition(project, settings)
    first = _start(store, settings, built)
    asyncio.run(send.run_send(store, settings, first))
    _audience(store, project, _many(7))  # two new readers since
    second = _start(store, settings, built)
    summary = asyncio.run(send.run_send(store, settings, second))
    assert summary.counts == {"sent": 2, "skipped": 5}


def test_an_active_send_blocks_another(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(3))
    built = _edition(project, settings)
    send_id = _start(store, settings, built)
    with pytest.raises(SendError, match=f"already has send {send_id} \\(sending\\): resume it with 'send --resume "
                                        f"{send_id}'"):
        _start(store, settings, built)


class Crash(BaseException):
    """The process dying (as SIGKILL would), not an error anyone handles."""


class CrashingProvider:
    """A provider that does not honour idempotency keys and dies on its second batch (a unit's edge)."""

    name: ClassVar[str] = "crashing"
    idempotent: ClassVar[bool] = False
    smtputf8: ClassVar[bool] = False
    max_batch: ClassVar[int] = 2

    def __init__(self) -> None:
        self.delivered: list[int] = []

    async def send(self, batch: Batch) -> list[Outcome]:
        if len(self.delivered) >= 2:
            raise Crash  # the process dies with the batch in flight
        self.delivered += [person.delivery_id for person in batch.recipients]
        return [Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=f"m{person.delivery_id}")
                for person in batch.recipients]

    async def aclose(self) -> None:
        pass


def test_rows_in_flight_at_a_crash_become_uncertain_without_idempotency(project: Path, settings: Settings,
                                                                         store: Store) -> None:
    _audience(store, project, _many(6))
    send_id = _start(store, settings, _edition(project, settings))
    provider = CrashingProvider()
    settings = settings.model_copy(update={"provider": settings.provider.model_copy(update={"concurrency": 1})})
    with pytest.raises(Crash):
        asyncio.run(send.run_send(store, settings, send_id, provider=provider))
    assert _rows(store, send_id) == {"sent": 2, "sending": 2, "queued": 2}
    sender_died(store, send_id)
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=_Fine()))
    assert summary.counts == {"sent": 4, "uncertain": 2}
    assert summary.uncertain == ("reader00002@example.net", "reader00003@example.net")
    assert send.resend_uncertain(store, send_id) == 2
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=_Fine()))
    assert summary.counts == {"sent": 6} and summary.status == "sent"


class _Fine(CrashingProvider):
    max_batch: ClassVar[int] = 100

    async def send(self, batch: Batch) -> list[Outcome]:
        return [Outcome(delivery_id=person.delivery_id, status="sent") for person in batch.recipients]


def test_a_live_runner_is_not_replaced(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(2))
    send_id = _start(store, settings, _edition(project, settings))
    with store.begin() as connection:  # another sender holds it, and renewed its lease just now
        connection.execute(sends.update().values(runner="elsewhere:1:alive",
                                                 lease_until=utcnow() + dt.timedelta(seconds=60)))
    with pytest.raises(SendBusy, match="is being sent by elsewhere:1:alive"):
        asyncio.run(send.run_send(store, settings, send_id))


def test_pause_cancel_and_retry_failed(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(4))
    send_id = _start(store, settings, _edition(project, settings))
    send.pause_send(store, send_id)
    summary = asyncio.run(send.run_send(store, settings, send_id, should_stop=lambda: True))
    assert summary.counts == {"queued": 4}
    send.pause_send(store, send_id)
    send.cancel_send(store, send_id)
    assert send.summary(store, send_id).counts == {"cancelled": 4}
    with pytest.raises(SendError, match="is cancelled"):
        asyncio.run(send.run_send(store, settings, send_id))


def test_check_gate_refuses_and_force_reason_is_recorded(project: Path, settings: Settings, store: Store,
                                                         run_cli) -> None:
    _audience(store, project, _many(2))
    write_draft(project, "2024-03-01-broken", FRONT, "TK\n")
    code, out, err = run_cli("send", "2024-03-01-broken", "--now", "--offline", "--no-progress")
    assert code == 1 and "check error(s)" in err
    assert not (project / "outbox").exists()
    code, out, err = run_cli("send", "2024-03-01-broken", "--now", "--offline", "--no-progress", "--force",
                             "--reason", "the editor approved it")
    assert code == 0, err
    with store.begin() as connection:
        assert connection.scalar(select(sends.c.override_reason)) == "the editor approved it"
        report = connection.scalar(select(sends.c.check_report))  # kept with the send, for the console
    assert report is not None and report["ok"] is False
    assert any(problem["severity"] == "error" for problem in report["problems"])
    assert isinstance(ChecksFailed("x"), Exception)


def test_test_send_is_not_recorded(project: Path, settings: Settings, store: Store, run_cli) -> None:
    _audience(store, project, _many(2))
    code, out, err = run_cli("send", SAMPLE, "--test", "me@example.net,you@example.net", "--offline")
    assert code == 0, err
    folders = list((project / "outbox").glob("test-*"))
    assert len(folders) == 1 and len(list(folders[0].glob("*.eml"))) == 2
    message = email.message_from_bytes((folders[0] / "1.eml").read_bytes(), policy=email.policy.strict)
    assert message["Subject"].startswith("[TEST] ")
    assert run_cli("logs")[1].strip() == "no sends yet"


def test_send_and_logs_commands(project: Path, settings: Settings, store: Store, run_cli) -> None:
    _audience(store, project, _many(3))
    code, out, err = run_cli("send", SAMPLE, "--now", "--offline", "--no-progress")
    assert code == 0, err
    assert "send 1: sent: 3 sent" in out
    code, out, err = run_cli("logs")
    assert "2024-02-22-china-russia-report" in out and "3 sent" in out
    code, out, err = run_cli("logs", "1", "--format", "csv", "--search", "reader00001")
    lines = out.strip().splitlines()
    assert lines[0].startswith("email,status,attempts,provider_message_id,error") and len(lines) == 2
    code, out, err = run_cli("logs", "1", "--format", "json", "--status", "sent")
    import json

    assert [row["email"] for row in json.loads(out)] == [f"reader0000{n}@example.net" for n in range(3)]
    assert run_cli("logs", "99")[0] == 2


# ---------------------------------------------------------------- real processes, killed


def _spawn(project: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _small_batches(project: Path) -> None:
    """Batches of 7, and a lease of a second: a killed sender's send can be taken over a second later."""
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8").replace('name = "outbox"', 'name = "outbox"\nbatch_size = 7')
    path.write_text(text + "\n[send]\nlease_seconds = 1\n", encoding="utf-8")


def _wait_for_the_lease_to_expire(store: Store, send_id: int) -> None:
    with store.begin() as connection:
        until = connection.scalar(select(sends.c.lease_until).where(sends.c.id == send_id))
    if until is not None:
        time.sleep(max(0.0, (until - utcnow()).total_seconds()) + 0.05)


def _assert_exactly_once(project: Path, store: Store, send_id: int, audience: int) -> None:
    rows = _rows(store, send_id)
    assert sum(rows.values()) == audience
    assert set(rows) <= {"sent", "uncertain"}, rows
    files = list((project / "outbox" / str(send_id)).glob("*.eml"))
    with store.begin() as connection:
        ids = set(connection.scalars(select(deliveries.c.id).where(deliveries.c.send_id == send_id,
                                                                    deliveries.c.status == "sent")))
    assert {int(path.stem) for path in files} == ids  # one file per delivered row, no other
    assert not list((project / "outbox" / str(send_id)).glob(".*.part"))


def _kill_when_sent(process: subprocess.Popen[bytes], store: Store, threshold: int) -> None:
    """SIGKILL the sender as soon as at least ``threshold`` rows are recorded sent (or it ends)."""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        with store.begin() as connection:
            sent = connection.scalar(select(func.count()).select_from(deliveries)
                                     .where(deliveries.c.status == "sent")) or 0
        if sent >= threshold:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigkill_at_a_random_moment_then_resume(project: Path, settings: Settings, store: Store, seed: int) -> None:
    audience = 1200
    _small_batches(project)
    # Paced at 300 a second (the first second's worth at once), so the send lasts some 3 s whatever the
    # machine's speed, and the kill lands while it is under way.
    toml = project / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("batch_size = 7", "batch_size = 7\nrate_per_second = 300"),
                    encoding="utf-8")
    _audience(store, project, _many(audience))
    process = _spawn(project, "send", SAMPLE, "--now", "--offline", "--no-progress")
    threshold = random.Random(seed).randrange(1, audience * 3 // 4)
    _kill_when_sent(process, store, threshold)
    with store.begin() as connection:
        send_id = connection.scalar(select(func.max(sends.c.id)))
    assert send_id is not None
    before = _rows(store, send_id)
    assert before.get("sent", 0) < audience, f"the kill came after the send finished: {before}"
    _wait_for_the_lease_to_expire(store, send_id)
    resumed = _spawn(project, "send", "--resume", str(send_id), "--no-progress")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode in (0, 2), err.decode()
    if resumed.returncode == 2:
        assert b"is sent" in err or b"nothing left" in err  # the send had finished before the kill
    _assert_exactly_once(project, store, send_id, audience)


def test_two_resumes_at_once_never_send_anyone_twice(project: Path, settings: Settings, store: Store) -> None:
    audience = 300
    _small_batches(project)
    _audience(store, project, _many(audience))
    built = prepare_and_write(project / "drafts" / SAMPLE, load_settings(project / "newsletter.toml"))
    send_id = send.create_send(store, settings, built.edition, built_path=str(built.folder))
    first, second = (_spawn(project, "send", "--resume", str(send_id), "--no-progress") for _ in range(2))
    results = [process.communicate(timeout=120) for process in (first, second)]
    codes = sorted(process.returncode for process in (first, second))
    assert codes[0] == 0, results
    _assert_exactly_once(project, store, send_id, audience)
    with store.begin() as connection:
        attempts = connection.scalars(select(deliveries.c.attempts).where(deliveries.c.send_id == send_id)).all()
    assert set(attempts) == {1}, "a row was claimed twice"


def test_an_unsubscribe_during_a_send_suppresses_the_rows_not_yet_claimed(project: Path, settings: Settings,
                                                                          store: Store) -> None:
    _audience(store, project, _many(6))
    send_id = _start(store, settings, _edition(project, settings))

    class Unsubscribing(_Fine):
        max_batch: ClassVar[int] = 2

        async def send(self, batch: Batch) -> list[Outcome]:
            if batch.recipients[0].email == "reader00000@example.net":  # while the first batch is out
                unsubscribe(store, "reader00001@example.net")  # in flight: it settles as it comes back
                unsubscribe(store, "reader00004@example.net")  # still queued: nobody sends it now
            return await super().send(batch)

    settings = settings.model_copy(update={"provider": settings.provider.model_copy(update={"concurrency": 1})})
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=Unsubscribing()))
    assert summary.counts == {"sent": 5, "suppressed": 1}
    with store.read() as connection:
        assert connection.scalar(select(deliveries.c.email).where(deliveries.c.status == "suppressed")) \
            == "reader00004@example.net"
