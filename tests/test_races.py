"""Races between real processes on one database: what two commands started together must never do.

On PostgreSQL the commands are lined up on a lock the test holds: every process blocks on the table it
races for (or on the migrations' advisory lock), and the test lets them all go at once, so each trial runs
the check-then-write of every process side by side. On SQLite, where every transaction begins IMMEDIATE and
writers take turns, the commands are started back to back.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, func, select, text

from pipeline.config import Settings
from pipeline.prepare import prepare_and_write
from pipeline.send import cancel_send, create_send
from pipeline.store import Store, utcnow
from pipeline.store.tables import deliveries, editions, rate_limits, sends, subscribers

from .conftest import SAMPLE, SECRET, point_at
from .test_send import _audience, _many

MIGRATIONS_LOCK = 727274  # the key Store.migrate takes (pipeline/store/__init__.py)
AUDIENCE = 300
LOCK_WAIT_SECONDS = 60


def _spawn(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=project, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Finished:
    """A command that ran: its exit code and what it printed."""

    def __init__(self, args: tuple[str, ...], process: subprocess.Popen[str]):
        out, err = process.communicate(timeout=180)
        self.args, self.code, self.out, self.err = args, process.returncode, out, err

    def __repr__(self) -> str:
        return f"newsletter {' '.join(self.args)} -> {self.code}\n{self.out}{self.err}"

    @property
    def clean(self) -> bool:
        """No traceback, no raw database error, no statement or HTML quoted back."""
        text = self.out + self.err
        return not any(sign in text for sign in ("Traceback", "IntegrityError", "psycopg", "<html", "INSERT INTO"))


def _waiting(connection: Connection, lock: str) -> int:
    """How many other sessions wait on ``lock``: a table's name, or ``advisory``."""
    if lock == "advisory":
        where = "locktype = 'advisory' AND objid = :key"
    else:
        where = "locktype = 'relation' AND relation = CAST(:table AS regclass)"
    return int(connection.scalar(text(f"SELECT count(*) FROM pg_locks WHERE NOT granted AND {where}"),
                                 {"key": MIGRATIONS_LOCK, "table": lock}) or 0)


def _hold(connection: Connection, lock: str) -> None:
    if lock == "advisory":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATIONS_LOCK})
    else:
        connection.execute(text(f"LOCK TABLE {lock} IN ACCESS EXCLUSIVE MODE"))


def together(project: Path, url: str | None, lock: str, *commands: tuple[str, ...]) -> list[Finished]:
    """Run ``commands`` at once. On PostgreSQL (``url``), hold ``lock`` until every process waits on it, then
    release it: they all go at the same moment. On SQLite (``url`` None) start them back to back."""
    if url is None:
        processes = [_spawn(project, *args) for args in commands]
        return [Finished(args, process) for args, process in zip(commands, processes, strict=True)]
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            with connection.begin():
                _hold(connection, lock)
                processes = [_spawn(project, *args) for args in commands]
                deadline = time.monotonic() + LOCK_WAIT_SECONDS
                while _waiting(connection, lock) < len(processes):
                    if any(process.poll() is not None for process in processes) or time.monotonic() > deadline:
                        break  # one ended (or hung) before reaching the lock: its output says why
                    time.sleep(0.02)
            # the transaction ends here: the lock is released and every waiter goes
    finally:
        engine.dispose()
    return [Finished(args, process) for args, process in zip(commands, processes, strict=True)]


def _url(store: Store) -> str | None:
    return None if store.is_sqlite else store.url


def _trials(store: Store) -> range:
    return range(1 if store.is_sqlite else 3)


def _outbox(project: Path, send_id: int) -> set[int]:
    return {int(path.stem) for path in (project / "outbox" / str(send_id)).glob("*.eml")}


def _assert_everyone_once(project: Path, store: Store, audience: int) -> None:
    """Every subscriber has exactly one row delivered, across every send, and one outbox file per such row."""
    with store.read() as connection:
        delivered = connection.execute(select(deliveries.c.id, deliveries.c.send_id, deliveries.c.subscriber_id)
                                       .where(deliveries.c.status == "sent")).all()
        people = connection.scalar(select(func.count()).select_from(subscribers))
        unsettled = connection.scalar(select(func.count()).select_from(deliveries)
                                      .where(deliveries.c.status.in_(("queued", "sending", "uncertain"))))
    per_person = Counter(row.subscriber_id for row in delivered)
    assert people == audience and len(per_person) == audience, (people, len(per_person))
    assert set(per_person.values()) == {1}, [who for who, times in per_person.items() if times > 1][:5]
    assert unsettled == 0
    files = set().union(*(_outbox(project, send_id) for send_id in {row.send_id for row in delivered}))
    assert files == {row.id for row in delivered}


def _sends_of(store: Store, edition: str) -> list[tuple[int, str]]:
    with store.read() as connection:
        return [(row.id, row.status) for row in connection.execute(
            select(sends.c.id, sends.c.status).join(editions, editions.c.id == sends.c.edition_id)
            .where(editions.c.name == edition).order_by(sends.c.id))]


def _one_won(finished: list[Finished], refusal: Callable[[str], bool]) -> None:
    """One command succeeded; the other exited non-zero with one line that ``refusal`` recognises."""
    assert all(run.clean for run in finished), finished
    codes = sorted(run.code for run in finished)
    assert codes[0] == 0 and codes[1] != 0, finished
    loser = next(run for run in finished if run.code != 0)
    assert len(loser.err.strip().splitlines()) == 1 and refusal(loser.err), loser


def _fresh(store: Store) -> None:
    """Forget every send and edition, so that the next trial starts as the first did."""
    with store.begin() as connection:
        for table in (deliveries, sends, editions, rate_limits):
            connection.execute(table.delete())


SEND_NOW = ("send", SAMPLE, "--now", "--offline", "--no-progress")


# ---------------------------------------------------------------- a. send --now twice, after a cancelled send


def test_two_sends_now_after_a_cancelled_send_send_once(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(AUDIENCE))
    for _ in _trials(store):
        _fresh(store)
        built = prepare_and_write(project / "drafts" / SAMPLE, settings)
        cancel_send(store, create_send(store, settings, built.edition, built_path=str(built.folder)))
        finished = together(project, _url(store), "sends", SEND_NOW, SEND_NOW)
        _one_won(finished, lambda line: "already has send" in line)
        statuses = [status for _, status in _sends_of(store, built.edition.name)]
        assert statuses == ["cancelled", "sent"], (statuses, finished)
        _assert_everyone_once(project, store, AUDIENCE)


# ---------------------------------------------------------------- c. send --now twice, of an edition never sent


def test_two_sends_now_of_a_new_edition_send_once_and_say_so_in_one_line(project: Path, settings: Settings,
                                                                        store: Store) -> None:
    _audience(store, project, _many(AUDIENCE))
    for _ in _trials(store):
        _fresh(store)
        finished = together(project, _url(store), "sends", SEND_NOW, SEND_NOW)
        _one_won(finished, lambda line: "already has send" in line)
        with store.read() as connection:
            assert connection.scalar(select(func.count()).select_from(editions)) == 1
        assert [status for _, status in _sends_of(store, SAMPLE)] == ["sent"], finished
        _assert_everyone_once(project, store, AUDIENCE)


# ---------------------------------------------------------------- b. two runners, one dropped draft


def _copy(project: Path, name: str, at: dt.datetime | None = None) -> None:
    """Another edition: the sample's text in ``drafts/<name>``, to be sent at ``at`` when given (a dropped draft)."""
    text = (project / "drafts" / SAMPLE / "draft.md").read_text(encoding="utf-8")
    folder = project / "drafts" / name
    folder.mkdir(exist_ok=True)
    front = "date: 2024-03-01"
    if at is not None:
        front += f"\nsend_at: {at.astimezone(dt.UTC).isoformat(timespec='milliseconds')}"
    (folder / "draft.md").write_text(text.replace("date: 2024-02-22", front), encoding="utf-8")


def test_two_runners_pick_up_one_dropped_draft_once(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(AUDIENCE))
    for trial in _trials(store):
        _fresh(store)
        name = f"2024-03-0{trial + 1}-dropped"
        _copy(project, name, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=12))
        run = ("run", "--until-idle")
        finished = together(project, _url(store), "sends", run, run)
        assert all(result.code == 0 and result.clean for result in finished), finished
        assert [status for _, status in _sends_of(store, name)] == ["sent"], finished
        for result in finished:  # the runner that lost the race says nothing of it, or says it was scheduled
            assert "cannot be scheduled" not in result.err and "already has send" not in result.err, result
        _assert_everyone_once(project, store, AUDIENCE)
        shutil.rmtree(project / "drafts" / name)


# ---------------------------------------------------------------- d. two imports of the same addresses


def test_two_imports_of_the_same_addresses_store_each_once(project: Path, settings: Settings, store: Store) -> None:
    people = _many(AUDIENCE)
    path = project / "audience.csv"
    path.write_text("email,name,tags,status\n" + "".join(f"{e},{n},{t},active\n" for e, n, t in people),
                    encoding="utf-8")
    for _ in _trials(store):
        with store.begin() as connection:
            connection.execute(subscribers.delete())
        load = ("subscribers", "import", str(path))
        finished = together(project, _url(store), "subscribers", load, load)
        assert all(result.code == 0 and result.clean for result in finished), finished
        with store.read() as connection:
            keys = connection.scalars(select(subscribers.c.email_key)).all()
        assert sorted(keys) == [email for email, _, _ in people]
        outcomes = " ".join(result.out for result in finished)
        assert f"{AUDIENCE} added" in outcomes and f"{AUDIENCE} unchanged" in outcomes, finished


# ---------------------------------------------------------------- e. two senders, a rate limit used for the first time


def test_two_senders_share_a_new_rate_limit(project: Path, settings: Settings, store: Store) -> None:
    toml = project / "newsletter.toml"
    limited = 'name = "outbox"\nrate_per_second = 5000\nbatch_size = 20'
    toml.write_text(toml.read_text(encoding="utf-8").replace('name = "outbox"', limited), encoding="utf-8")
    _audience(store, project, _many(200))
    later = "2024-03-01-second"
    _copy(project, later)
    first, second = SEND_NOW, ("send", later, "--now", "--offline", "--no-progress")
    for _ in _trials(store):
        _fresh(store)
        finished = together(project, _url(store), "rate_limits", first, second)
        assert all(result.code == 0 and result.clean for result in finished), finished
        with store.read() as connection:
            statuses: dict[str, int] = dict(connection.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)).all())
            buckets = connection.scalar(select(func.count()).select_from(rate_limits))
        assert statuses == {"sent": 400} and buckets == 1, (statuses, finished)


# ---------------------------------------------------------------- f. two runners on an empty database


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_runners_on_an_empty_database_both_start(project: Path, request: pytest.FixtureRequest,
                                                      kind: str) -> None:
    url: str | None = None
    if kind == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
        point_at(project / "newsletter.toml", url)
    shutil.rmtree(project / "drafts")
    (project / "drafts").mkdir()
    run = ("run", "--until-idle")
    finished = together(project, url, "advisory", run, run)
    assert all(result.code == 0 and result.clean for result in finished), finished
    store = Store(url or f"sqlite:///{project / 'newsletter.db'}")
    try:
        with store.read() as connection:
            version = connection.scalar(text("SELECT version_num FROM alembic_version"))
            jobs = connection.scalar(text("SELECT count(*) FROM apscheduler_jobs"))
    finally:
        store.dispose()
    assert version is not None and jobs == 0


# ---------------------------------------------------------------- one write waiting on another's uncommitted row


def _beside_an_uncommitted_write(store: Store, write: Callable[[Connection], Any], call: Callable[[], Any]
                                 ) -> tuple[Any, Any]:
    """``call`` run in a thread while another transaction has done ``write`` and not yet committed it; on
    PostgreSQL the other transaction commits once ``call`` waits on its row (on SQLite ``call`` waits to
    begin). What ``write`` and ``call`` returned."""
    with store.engine.connect() as other, ThreadPoolExecutor(1) as pool:
        other.begin()
        written = write(other)
        calling = pool.submit(call)
        if not store.is_sqlite:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while not other.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                assert time.monotonic() < deadline and not calling.done(), calling
                time.sleep(0.02)
        other.commit()
        return written, calling.result(timeout=LOCK_WAIT_SECONDS)


def test_a_signup_confirmed_while_an_import_stores_the_address_confirms_the_imported_row(store: Store) -> None:
    from pipeline.store import readers

    now = utcnow()
    ticket = readers.open_signup(store, email="ada@example.org", email_key="ada@example.org", name="Ada", tags=(),
                                 now=now, valid_for=dt.timedelta(days=2), resend_after=dt.timedelta(hours=1))
    imported, confirmed = _beside_an_uncommitted_write(store, lambda connection: connection.scalar(
        subscribers.insert().values(email="ada@example.org", email_key="ada@example.org", name="Ada Lovelace",
                                    tags=";", status="active", attributes={}, created_at=now, updated_at=now,
                                    soft_bounces=0).returning(subscribers.c.id)),
        lambda: readers.confirm(store, ticket.id, topics=(), now=now))
    assert (confirmed.outcome, confirmed.subscriber_id) == ("confirmed", imported)
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(subscribers)) == 1


def test_two_accounts_of_one_name_added_at_once_make_one(store: Store) -> None:
    from pipeline.store import staff
    from pipeline.store.tables import staff_users

    now = utcnow()
    _, added = _beside_an_uncommitted_write(store, lambda connection: connection.execute(staff_users.insert().values(
        name="zed", role="editor", password_hash="first", created_at=now, updated_at=now)),
        lambda: staff.add_user(store, name="zed", role="admin", password_hash="second", now=now))
    assert added is False
    with store.read() as connection:
        assert connection.execute(select(staff_users.c.role, staff_users.c.password_hash)).all() == [
            ("editor", "first")]


@pytest.mark.postgresql
def test_an_import_the_database_rolls_back_for_a_deadlock_is_run_again(project: Path, store: Store,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Another transaction holds the import's last address, uncommitted, and once the import waits for it asks
    for the import's first: a deadlock, which PostgreSQL settles by rolling the import back (the other session
    waits longer before it looks for one). The import runs again once the other commits: everyone once."""
    from pipeline.subscribers import CHUNK, import_subscribers

    people = [(f"reader{number:05d}@example.net", f"Reader {number}") for number in range(CHUNK * 2 + 500)]
    path = project / "audience.csv"
    path.write_text("email,name\n" + "".join(f"{email},{name}\n" for email, name in people), encoding="utf-8")
    now = utcnow()

    def add(connection: Connection, email: str) -> None:
        connection.execute(subscribers.insert().values(email=email, email_key=email, name="Elsewhere", tags=";",
                                                       status="active", attributes={}, created_at=now,
                                                       updated_at=now, soft_bounces=0))

    with store.engine.connect() as other, ThreadPoolExecutor(1) as pool:
        other.begin()
        other.execute(text("SET LOCAL deadlock_timeout = '20s'"))  # the import is the one rolled back
        add(other, people[-1][0])
        importing = pool.submit(import_subscribers, store, path)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while not other.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
            assert time.monotonic() < deadline and not importing.done(), importing
            time.sleep(0.02)
        add(other, people[0][0])  # waits for the import's row, until the import is rolled back
        other.commit()
        report = importing.result(timeout=LOCK_WAIT_SECONDS)
    assert "deadlock detected" in caplog.text and "importing it again" in caplog.text
    assert (report.added, report.updated) == (len(people) - 2, 2)
    with store.read() as connection:
        stored = dict(connection.execute(select(subscribers.c.email_key, subscribers.c.name)).all())
    assert stored == dict(people)
