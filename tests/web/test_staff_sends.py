"""The console's sends, in-process over the real SQLite store: rows made by the real send path and the store's moves."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from pipeline import accounts, csvcells, send
from pipeline.config import Settings
from pipeline.errors import SendBusy
from pipeline.schedule.firing import resume
from pipeline.store import Store, utcnow
from pipeline.store import console as console_db
from pipeline.store import sends as db
from pipeline.store import staff as staff_db
from pipeline.store.calendar import live
from pipeline.store.states import DELIVERY_MOVES, SEND_MOVES, DeliveryStatus, SendStatus, send_moves_from
from pipeline.store.tables import deliveries, sends, suppressions
from pipeline.web.staff import sends as pages
from tests.conftest import sender_died
from tests.test_send import _audience, _edition, _many, _rows
from tests.web.conftest import csrf_of
from tests.web.test_staff_auth import PASSWORD, sign_in

OWNER = "test:1:claims"
ACTION_NAMES = tuple(pages.ACTIONS)
FORMULA = "=HYPERLINK(\"https://evil.example\")"


@pytest.fixture
def staff(store: Store) -> Store:
    """vera (viewer), ed (editor) and ada (admin), as in test_staff_auth."""
    for name, role in (("vera", "viewer"), ("ed", "editor"), ("ada", "admin")):
        accounts.add(store, name, role, PASSWORD, by="test")
    return store


def _send_of(project: Path, settings: Settings, store: Store, people: int = 40, *, owner: str | None = None,
             report: bool = True, suppressed: tuple[int, ...] = ()) -> int:
    _audience(store, project, _many(people))
    if suppressed:  # on the suppression list (the provider's word, say) though still active: born suppressed
        with store.begin() as connection:
            connection.execute(insert(suppressions), [
                {"email_key": f"reader{number:05d}@example.net", "reason": "provider", "source": "test",
                 "created_at": utcnow()} for number in suppressed])
    built = _edition(project, settings)
    from pipeline.checks import Report

    checks = Report(edition=built.edition.name, problems=(), links=()) if report else None
    return send.create_send(store, settings, built.edition, built_path=str(built.folder), owner=owner,
                            override_reason="the link checker was down" if report else None, report=checks)


@pytest.fixture
def mixed(project: Path, settings: Settings, store: Store, staff) -> int:
    """A sent send of 40: 2 suppressed at queueing, 3 transient and 1 permanent failure, 2 uncertain, 32 sent."""
    send_id = _send_of(project, settings, store, owner=OWNER, suppressed=(38, 39))
    claimed = db.claim_batch(store, send_id, OWNER, 6, lease_seconds=60)
    assert claimed is not None
    failed, uncertain = DeliveryStatus.FAILED, DeliveryStatus.UNCERTAIN
    kinds = [(failed, "transient", FORMULA), (failed, "transient", "451 try later"),
             (failed, "transient", "451 try later"), (failed, "permanent", "550 no such user"),
             (uncertain, "uncertain", "no answer"), (uncertain, "uncertain", "no answer")]
    outcomes = [db.Settled(delivery_id=row.delivery_id, status=status, error_class=kind, error_text=text)
                for row, (status, kind, text) in zip(claimed.rows, kinds, strict=True)]
    assert db.settle(store, send_id, OWNER, claimed.batch_id, outcomes, lease_seconds=60)
    db.release(store, send_id, OWNER)
    with ThreadPoolExecutor(1) as thread:  # its own thread: a browser test may run an event loop in this one
        summary = thread.submit(asyncio.run, send.run_send(store, settings, send_id)).result()
    assert summary.counts == {"sent": 32, "failed": 4, "uncertain": 2, "suppressed": 2}
    return send_id


def _editor(client) -> str:
    sign_in(client, "ed")
    return csrf_of(client.get("/staff/sends").text)


def _walk(client, send_id: int, query: str = "") -> list[dict]:
    """Every recipient of the JSON twin, page by page through its cursor."""
    rows: list[dict] = []
    url: str | None = f"/staff/sends/{send_id}?format=json" + (f"&{query}" if query else "")
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body["recipients"]
        url = body["next"] and body["next"] + "&format=json"
    return rows


# ---------------------------------------------------------------- reading


def test_the_list_shows_each_send_with_counts_rate_and_a_json_twin(client, mixed) -> None:
    sign_in(client, "vera")
    page = client.get("/staff/sends")
    assert page.status_code == 200 and f'href="/staff/sends/{mixed}"' in page.text
    assert "outbox" in page.text and "84.2%" in page.text  # 32 of 38 handed over
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d \w+ \(\d\d:\d\d UTC\)", page.text)
    line = client.get("/staff/sends?format=json").json()["sends"][0]
    assert line["id"] == mixed and line["audience"] == 40 and line["provider"] == "outbox"
    assert line["counts"] == {"sent": 32, "failed": 4, "uncertain": 2, "suppressed": 2}


def test_the_reconciliation_adds_up_and_nobody_is_unaccounted_for(client, mixed, store) -> None:
    sign_in(client, "vera")
    page = client.get(f"/staff/sends/{mixed}").text
    found = re.search(r'id="reckoning">(.*?)</p>', page, re.S)
    assert found is not None
    equation = re.sub(r"\s+", " ", found[1])
    total, terms = equation.split("=")
    numbers = [int(term.split()[0].replace(",", "")) for term in terms.split("+")]
    assert int(total.split()[-1]) == sum(numbers) == 40
    for status in ("sent", "failed", "uncertain", "suppressed", "skipped", "queued", "sending", "cancelled"):
        assert f" {status}" in equation
    body = client.get(f"/staff/sends/{mixed}?format=json").json()
    assert sum(body["reconciliation"].values()) == body["send"]["audience"] == 40
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(deliveries)
                                 .where(deliveries.c.send_id == mixed)) == 40
    reasons = {(item["status"], item["reason"]): item["count"] for item in body["failure_reasons"]}
    assert reasons[("failed", "transient: 451 try later")] == 2 and reasons[("uncertain", "uncertain: no answer")] == 2


def test_the_timeline_is_an_svg_with_a_text_alternative(client, mixed) -> None:
    sign_in(client, "vera")
    page = client.get(f"/staff/sends/{mixed}").text
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "<title" in svg and "<desc" in svg and "<script" not in svg and "<rect" in svg
    assert re.search(r"32 accepted\s+and 4 failed", svg)
    assert "The timeline as a table" in page


def test_keyset_pages_cover_every_row_exactly_once(client, mixed, store, monkeypatch) -> None:
    monkeypatch.setattr(console_db, "PAGE_SIZE", 7)
    sign_in(client, "vera")
    with store.read() as connection:
        everyone = set(connection.scalars(select(deliveries.c.id).where(deliveries.c.send_id == mixed)))
    walked = [row["id"] for row in _walk(client, mixed)]
    assert len(walked) == len(set(walked)) == 40 and set(walked) == everyone
    assert [row["status"] for row in _walk(client, mixed, "status=failed")] == ["failed"] * 4
    searched = _walk(client, mixed, "search=READER0001")  # case-insensitive prefix, address order
    assert [row["email"] for row in searched] == [f"reader{n:05d}@example.net" for n in range(10, 20)]
    assert [row["email"] for row in _walk(client, mixed, "search=reader0003&status=suppressed")] == \
        ["reader00038@example.net", "reader00039@example.net"]


def test_csv_export_streams_exactly_the_filtered_rows_with_formulas_defused(client, mixed) -> None:
    sign_in(client, "vera")
    for query in ("", "status=failed", "search=reader0002", "search=reader000&status=sent"):
        answer = client.get(f"/staff/sends/{mixed}/recipients.csv" + (f"?{query}" if query else ""))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        assert "content-length" not in answer.headers  # streamed, not built whole
        table = list(csv.DictReader(io.StringIO(answer.text)))
        expected = _walk(client, mixed, query)
        assert [int(row["delivery_id"]) for row in table] == [row["id"] for row in expected]
        assert [row["email"] for row in table] == [row["email"] for row in expected]
    failed = list(csv.DictReader(io.StringIO(client.get(f"/staff/sends/{mixed}/recipients.csv?status=failed").text)))
    written = next(row["error_text"] for row in failed if "HYPERLINK" in row["error_text"])
    assert written == "'" + FORMULA and csvcells.restored(written) == FORMULA


@pytest.mark.parametrize("path", ["/staff/sends/abc", "/staff/sends/999", "/staff/sends/999/recipients.csv",
                                  "/staff/sends/999/preview", "/staff/sends/{id}/explode"])
def test_unknown_sends_and_addresses_are_a_plain_404(client, mixed, path) -> None:
    sign_in(client, "ed")
    answer = client.get(path.replace("{id}", str(mixed)))
    assert answer.status_code == 404 and "Traceback" not in answer.text


@pytest.mark.parametrize("query", ["status=bogus", "after=abc", "after=-3", "after=1e9", "search=" + "x" * 400,
                                   "search=zzz&after=1"])
def test_bad_filters_and_cursors_are_a_plain_400(client, mixed, query) -> None:
    sign_in(client, "vera")
    for path in (f"/staff/sends/{mixed}?{query}", f"/staff/sends/{mixed}/recipients.csv?{query}"):
        answer = client.get(path)
        if "after=" in query and "recipients.csv" in path:
            continue  # the export has no cursor: it is every filtered row
        assert answer.status_code == 400, (path, answer.status_code)
        assert "Traceback" not in answer.text


def test_the_preview_is_framed_by_the_console_only_and_runs_no_script(client, mixed) -> None:
    sign_in(client, "vera")
    page = client.get(f"/staff/sends/{mixed}")
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    assert re.search(r'<iframe[^>]+src="/staff/sends/\d+/preview"[^>]+sandbox', page.text)
    preview = client.get(f"/staff/sends/{mixed}/preview")
    assert preview.status_code == 200 and "<html" in preview.text.lower()
    assert preview.headers["x-frame-options"] == "SAMEORIGIN"
    policy = preview.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in policy and "script-src" not in policy and "default-src 'none'" in policy


def test_the_check_report_and_force_reason_are_kept_with_the_send(client, mixed) -> None:
    sign_in(client, "vera")
    page = client.get(f"/staff/sends/{mixed}").text
    assert "Sent despite failed checks (--force): the link checker was down" in page
    assert "Passed: 0 problem(s)" in page
    assert client.get(f"/staff/sends/{mixed}?format=json").json()["send"]["check_report"]["ok"] is True


# ---------------------------------------------------------------- who may act


def test_a_viewer_sees_no_actions_and_gets_403_on_every_one(client, mixed) -> None:
    sign_in(client, "vera")
    page = client.get(f"/staff/sends/{mixed}")
    token = csrf_of(page.text)
    assert "Retry failed" not in page.text and "Send a test" not in page.text
    for name in ACTION_NAMES:
        assert client.get(f"/staff/sends/{mixed}/{name}").status_code == 403
        assert client.post(f"/staff/sends/{mixed}/{name}", data={"csrf_token": token, "confirm": "yes"}) \
            .status_code == 403
    assert client.post(f"/staff/sends/{mixed}/test", data={"csrf_token": token, "addresses": "a@example.org"}) \
        .status_code == 403


def test_a_post_without_the_session_csrf_token_is_refused(client, mixed, store) -> None:
    _editor(client)
    before = _rows(store, mixed)
    for name in ACTION_NAMES:
        for data in ({"confirm": "yes"}, {"confirm": "yes", "csrf_token": "forged"}):
            assert client.post(f"/staff/sends/{mixed}/{name}", data=data).status_code == 403
    assert _rows(store, mixed) == before and db.send_record(store, mixed).status == SendStatus.SENT


def test_an_action_needs_its_confirmation_which_says_how_many_it_affects(client, mixed, store) -> None:
    token = _editor(client)
    confirm = client.get(f"/staff/sends/{mixed}/retry")
    assert confirm.status_code == 200 and "3 recipient(s) whose delivery failed" in confirm.text
    assert client.post(f"/staff/sends/{mixed}/retry", data={"csrf_token": token}).status_code == 400
    assert _rows(store, mixed)["failed"] == 4
    assert client.get(f"/staff/sends/{mixed}/pause").status_code == 409  # a sent send cannot be paused


# ---------------------------------------------------------------- what each action does


def _act(client, token: str, send_id: int, name: str):
    return client.post(f"/staff/sends/{send_id}/{name}", data={"csrf_token": token, "confirm": "yes"},
                       follow_redirects=False)


def _audited(store: Store, action: str) -> list[str]:
    return [entry.target for entry in staff_db.audit_log(store) if entry.action == action]


def test_retry_queues_only_transient_failures_and_hands_the_send_to_the_runner(client, mixed, store,
                                                                               settings) -> None:
    token = _editor(client)
    answer = _act(client, token, mixed, "retry")
    assert answer.status_code == 303 and answer.headers["location"] == f"/staff/sends/{mixed}?done=retry"
    assert _rows(store, mixed) == {"sent": 32, "failed": 1, "queued": 3, "uncertain": 2, "suppressed": 2}
    record = db.send_record(store, mixed)
    assert record.status == SEND_MOVES["resume"].target and record.runner is None and record.lease_until is None
    assert _audited(store, "send retry") == [f"send {mixed}"]
    assert any(entry.id == mixed and entry.lease_expired(utcnow()) for entry in live(store))  # the runner's plan
    resume(store, settings, mixed)  # what `newsletter run` does with it
    assert _rows(store, mixed) == {"sent": 35, "failed": 1, "uncertain": 2, "suppressed": 2}


def test_resend_queues_the_uncertain_rows_and_nothing_else(client, mixed, store) -> None:
    token = _editor(client)
    assert _act(client, token, mixed, "resend").status_code == 303
    assert _rows(store, mixed) == {"sent": 32, "failed": 4, "queued": 2, "suppressed": 2}
    assert db.send_record(store, mixed).status == SendStatus.SENDING
    assert _audited(store, "send resend") == [f"send {mixed}"]


def test_pause_then_resume_change_only_the_send_status(client, project, settings, store, staff) -> None:
    send_id = _send_of(project, settings, store, 5)  # sending, queued, no sender yet
    token = _editor(client)
    before = _rows(store, send_id)
    assert _act(client, token, send_id, "pause").status_code == 303
    assert db.send_record(store, send_id).status == SendStatus.PAUSED and _rows(store, send_id) == before
    assert "resume" in send_moves_from(SendStatus.PAUSED) and "pause" not in send_moves_from(SendStatus.PAUSED)
    assert _act(client, token, send_id, "resume").status_code == 303
    record = db.send_record(store, send_id)
    assert record.status == SendStatus.SENDING and record.runner is None and _rows(store, send_id) == before
    assert "newsletter run" in client.get(f"/staff/sends/{send_id}").text
    assert _audited(store, "send pause") == _audited(store, "send resume") == [f"send {send_id}"]


def test_resume_never_steals_a_live_lease(client, project, settings, store, staff) -> None:
    send_id = _send_of(project, settings, store, 5)
    send.pause_send(store, send_id)
    sender_died(store, send_id)
    with store.begin() as connection:  # a sender that is alive: its lease runs another minute
        connection.execute(sends.update().where(sends.c.id == send_id).values(
            lease_until=utcnow() + dt.timedelta(minutes=1)))
    token = _editor(client)
    answer = _act(client, token, send_id, "resume")
    assert answer.status_code == 409 and "is being sent by elsewhere:1:dead" in answer.text
    record = db.send_record(store, send_id)
    assert record.status == SendStatus.PAUSED and record.runner == "elsewhere:1:dead"
    with pytest.raises(SendBusy):
        db.hand_to_runner(store, send_id, "test")
    assert not _audited(store, "send resume")


def test_cancel_of_a_scheduled_send_queues_nobody(client, project, settings, store, staff) -> None:
    _audience(store, project, _many(3))
    built = _edition(project, settings)
    send_id = send.schedule_send(store, settings, built.edition, built_path=str(built.folder),
                                 at=utcnow() + dt.timedelta(days=1), timezone="Europe/London")
    token = _editor(client)
    assert "cancel" in client.get(f"/staff/sends/{send_id}").text
    assert _act(client, token, send_id, "cancel").status_code == 303
    assert db.send_record(store, send_id).status == SendStatus.CANCELLED and _rows(store, send_id) == {}
    assert send_moves_from(SendStatus.CANCELLED) == ()
    assert client.get(f"/staff/sends/{send_id}/resume").status_code == 409


def test_cancel_of_a_sending_send_cancels_only_the_queued_rows(client, project, settings, store, staff) -> None:
    send_id = _send_of(project, settings, store, 4)
    token = _editor(client)
    assert _act(client, token, send_id, "cancel").status_code == 303
    assert _rows(store, send_id) == {"cancelled": 4}
    assert _audited(store, "send cancel") == [f"send {send_id}"]


def test_a_test_send_goes_to_the_typed_addresses_only(client, mixed, store) -> None:
    token = _editor(client)
    before = _rows(store, mixed)
    answer = client.post(f"/staff/sends/{mixed}/test",
                         data={"csrf_token": token, "addresses": "me@example.org, you@example.org"})
    assert answer.status_code == 200 and answer.text.count("<td>sent</td>") == 2
    assert _rows(store, mixed) == before
    assert _audited(store, "send test") == [f"send {mixed}"]
    bad = client.post(f"/staff/sends/{mixed}/test", data={"csrf_token": token, "addresses": "not an address"})
    assert bad.status_code == 400


def test_a_long_send_is_drawn_in_wider_buckets_that_still_add_up(mixed, store) -> None:
    start = utcnow().replace(second=0, microsecond=0) - dt.timedelta(hours=6)
    with store.begin() as connection:  # spread the settled rows over five hours (times only: no status moves)
        ids = connection.scalars(select(deliveries.c.id).where(deliveries.c.send_id == mixed,
                                                               deliveries.c.status.in_(["sent", "failed"]))).all()
        for number, delivery_id in enumerate(ids):
            connection.execute(deliveries.update().where(deliveries.c.id == delivery_id).values(
                updated_at=start + dt.timedelta(minutes=300 * number / (len(ids) - 1))))
    minutes, points = console_db.timeline(store, mixed)
    assert minutes == 3 and len(points) <= console_db.TIMELINE_BARS
    assert sum(accepted for _, accepted, _ in points) == 32 and sum(failed for _, _, failed in points) == 4
    assert [moment for moment, _, _ in points] == sorted(moment for moment, _, _ in points)


def test_retry_of_a_paused_send_still_held_by_its_sender_queues_and_says_to_resume(client, mixed, store) -> None:
    assert db.requeue(store, mixed, "resend") == 2  # reopened: paused, as the CLI leaves it
    with store.begin() as connection:
        connection.execute(sends.update().where(sends.c.id == mixed).values(
            runner="elsewhere:1:alive", lease_until=utcnow() + dt.timedelta(minutes=1)))
    token = _editor(client)
    answer = _act(client, token, mixed, "retry")
    assert answer.status_code == 409 and "3 row(s) queued again" in answer.text and "resume it then" in answer.text
    record = db.send_record(store, mixed)
    assert record.status == SendStatus.PAUSED and record.runner == "elsewhere:1:alive"
    assert _rows(store, mixed)["queued"] == 5 and _audited(store, "send retry") == [f"send {mixed}"]


def test_every_send_route_sends_an_anonymous_visitor_to_sign_in(client, mixed) -> None:
    for tail in ("", "?format=json", "/recipients.csv", "/preview", *(f"/{name}" for name in ACTION_NAMES)):
        answer = client.get(f"/staff/sends/{mixed}{tail}", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/staff/login?next=")
    for tail in ("/test", *(f"/{name}" for name in ACTION_NAMES)):
        assert client.post(f"/staff/sends/{mixed}{tail}", data={"confirm": "yes"}).status_code == 401


def test_a_provider_report_on_an_uncertain_row_of_a_finished_send_shows_at_once(client, mixed, store) -> None:
    """A sent send's counts are kept between views, but ``observe`` (uncertain -> sent, from a webhook) changes
    its rows without changing its status: the next view must count it."""
    sign_in(client, "vera")
    before = client.get(f"/staff/sends/{mixed}?format=json").json()["reconciliation"]
    assert before["uncertain"] == 2
    move = DELIVERY_MOVES["observe"]
    with store.begin() as connection:
        first = connection.scalar(select(deliveries.c.id).where(deliveries.c.send_id == mixed,
                                                                deliveries.c.status == DeliveryStatus.UNCERTAIN)
                                  .order_by(deliveries.c.id).limit(1))
        connection.execute(update(deliveries).values(status=move.target)
                           .where(deliveries.c.id == first, deliveries.c.status.in_(sorted(move.sources))))
    after = client.get(f"/staff/sends/{mixed}?format=json").json()["reconciliation"]
    assert (after["uncertain"], after["sent"]) == (1, before["sent"] + 1)
