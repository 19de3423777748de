"""The staff console end to end, in real headless Chromium against real uvicorn on a loopback port.

An editor signs in through the form, opens a send of 2,000 deliveries with transient and permanent failures and
uncertain rows (made by the store's own moves and the real send path), filters the failures, opens one
recipient, exports the CSV, retries the failed ones through the confirmation page, and cancels a scheduled send
through the schedule; a viewer's session sees no action and is refused every one. Each page is checked with
axe-core (WCAG 2.1 A/AA) and screenshotted at 375 and 1024 px into test-artifacts/staff/e2e/. What the pages
claim is compared with the store.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline import send
from pipeline.config import Settings
from pipeline.store import Store
from pipeline.store import sends as db
from pipeline.store import staff as staff_db
from pipeline.store.states import DeliveryStatus, SendStatus
from pipeline.store.tables import deliveries, subscribers
from pipeline.web.app import create_app
from pipeline.web.staff.sends import ACTIONS
from tests.conftest import ROOT, chromium_available
from tests.test_accessibility import AXE, RUN_AXE, WCAG_TAGS, describe
from tests.test_send import _audience, _edition, _many
from tests.web.staffing import PASSWORD, add_staff, scheduled
from tests.web.test_staff_browser import _serve

ARTIFACTS = ROOT / "test-artifacts" / "staff" / "e2e"
WIDTHS = (375, 1024)
OWNER = "test:1:e2e"
AUDIENCE = 2000
# The first batch of 100 is settled by hand: these many of each kind; the rest of the send goes out for real.
TRANSIENT, PERMANENT, UNCERTAIN = 17, 6, 9

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif((not chromium_available() or not AXE.is_file()) and not os.environ.get("CI"),
                       reason="needs Debian's chromium and tools/node_modules/axe-core (make setup)"),
]


@dataclass(frozen=True, kw_only=True)
class World:
    base: str
    send_id: int
    planned: int  # a send scheduled a day ahead
    store: Store


@pytest.fixture(scope="module")
def browser():
    from pipeline.preview import browser_session

    with browser_session() as chromium:
        yield chromium


def _big_send(project: Path, settings: Settings, store: Store) -> int:
    """A finished send of 2,000: the first batch of 100 settled with transient and permanent failures and
    uncertain rows, released, then the rest sent by ``send.run_send``."""
    _audience(store, project, _many(AUDIENCE))
    built = _edition(project, settings)
    send_id = send.create_send(store, settings, built.edition, built_path=str(built.folder), owner=OWNER)
    claimed = db.claim_batch(store, send_id, OWNER, 100, lease_seconds=60)
    assert claimed is not None and len(claimed.rows) == 100
    failed, uncertain, sent = DeliveryStatus.FAILED, DeliveryStatus.UNCERTAIN, DeliveryStatus.SENT
    Kind = tuple[DeliveryStatus, str | None, str | None]
    kinds: list[Kind] = [(failed, "transient", "451 try later")] * TRANSIENT
    kinds += [(failed, "permanent", "550 no such user")] * PERMANENT
    kinds += [(uncertain, "uncertain", "no answer")] * UNCERTAIN
    kinds += [(sent, None, None)] * (100 - len(kinds))
    # Spread the kinds through the batch, so the failures are not simply the first addresses.
    kinds = kinds[::3] + kinds[1::3] + kinds[2::3]
    outcomes = [db.Settled(delivery_id=row.delivery_id, status=status, error_class=kind, error_text=text,
                           provider_message_id=f"hand-{row.delivery_id}" if status == sent else None)
                for row, (status, kind, text) in zip(claimed.rows, kinds, strict=True)]
    assert db.settle(store, send_id, OWNER, claimed.batch_id, outcomes, lease_seconds=60)
    db.release(store, send_id, OWNER)
    with ThreadPoolExecutor(1) as thread:  # its own thread: the browser's sync API runs an event loop in this one
        summary = thread.submit(asyncio.run, send.run_send(store, settings, send_id)).result()
    assert summary.counts == {"sent": AUDIENCE - TRANSIENT - PERMANENT - UNCERTAIN, "failed": TRANSIENT + PERMANENT,
                              "uncertain": UNCERTAIN}
    return send_id


@pytest.fixture
def world(project: Path, settings: Settings, store: Store) -> Iterator[World]:
    add_staff(store)
    send_id = _big_send(project, settings, store)
    planned = scheduled(store, settings, project)
    server, thread, port = _serve(create_app(settings, store))
    try:
        yield World(base=f"http://127.0.0.1:{port}", send_id=send_id, planned=planned, store=store)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def page(browser, world: World):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": WIDTHS[-1], "height": 800}, bypass_csp=True,
                                  accept_downloads=True)
    try:
        tab = context.new_page()
        base = world.base
        tab.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
        yield tab
    finally:
        context.close()


class Checker:
    """axe-core and a full-page screenshot of the page as it stands, at each width; the problems found."""

    def __init__(self, prefix: str):
        self.prefix, self.steps = prefix, 0
        self.problems: list[str] = []

    def __call__(self, page, name: str) -> None:
        self.steps += 1
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            page.add_script_tag(path=str(AXE))
            found = page.evaluate(RUN_AXE, {"type": "tag", "values": WCAG_TAGS})
            if found:
                self.problems.append(f"{name} at {width} px: {describe(found)}")
            page.screenshot(path=str(ARTIFACTS / f"{self.prefix}-{self.steps:02d}-{name}-{width}.png"), full_page=True)
        page.set_viewport_size({"width": WIDTHS[-1], "height": 800})


def _sign_in(page, base: str, name: str, check: Checker) -> None:
    page.goto(base + "/staff/login", wait_until="load")
    check(page, "login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/staff/sends")


def _statuses(store: Store, send_id: int) -> dict[int, tuple[str, str | None]]:
    """Each delivery of the send: its status and error class, by delivery id."""
    with store.read() as connection:
        return {row.id: (row.status, row.error_class) for row in connection.execute(
            select(deliveries.c.id, deliveries.c.status, deliveries.c.error_class)
            .where(deliveries.c.send_id == send_id))}


def _failed_in_store(store: Store, send_id: int) -> dict[int, tuple[int, str]]:
    """The failed deliveries: delivery id -> (subscriber id, address)."""
    with store.read() as connection:
        return {row.id: (row.subscriber_id, row.email) for row in connection.execute(
            select(deliveries.c.id, deliveries.c.subscriber_id, subscribers.c.email)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(deliveries.c.send_id == send_id, deliveries.c.status == DeliveryStatus.FAILED))}


def _table(page) -> list[tuple[str, str]]:
    """The recipient table's rows as (address, status)."""
    rows = page.locator("table:has(caption:text-matches('^Recipients of send')) tbody tr")
    return [(row.locator("td").nth(0).inner_text().strip(), row.locator("td").nth(1).inner_text().strip())
            for row in rows.all()]


def test_an_editor_filters_opens_exports_retries_and_cancels(page, world: World) -> None:
    base, store, send_id = world.base, world.store, world.send_id
    check = Checker("editor")
    _sign_in(page, base, "ed", check)
    check(page, "sends")

    # Open the send from the list.
    page.click(f'a[href="/staff/sends/{send_id}"]')
    page.wait_for_url(f"{base}/staff/sends/{send_id}")
    assert re.sub(r"\s+", " ", page.inner_text("#reckoning")).startswith(f"Audience {AUDIENCE:,} =")
    check(page, "send")

    # Filter the failures: exactly the failed rows of the store.
    page.select_option("#status", "failed")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"{base}/staff/sends/{send_id}?*status=failed*")
    failed = _failed_in_store(store, send_id)
    assert len(failed) == TRANSIENT + PERMANENT
    shown = _table(page)
    assert all(status == "failed" for _, status in shown), shown
    assert sorted(email for email, _ in shown) == sorted(email for _, email in failed.values())
    assert page.get_by_role("link", name="Next page").count() == 0  # all on one page: nothing hidden
    check(page, "failed")

    # Export exactly those rows as CSV.
    with page.expect_download() as started:
        page.get_by_role("link", name="Export these rows as CSV").click()
    download = started.value
    assert download.suggested_filename == f"send-{send_id}-recipients.csv"
    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert {int(row["delivery_id"]): (int(row["subscriber_id"]), row["email"]) for row in exported} == failed
    assert len(exported) == len(failed) and {row["status"] for row in exported} == {"failed"}
    assert [row["email"] for row in exported] == [email for email, _ in shown]  # the table's order

    # Open one recipient: their subscriber page, with this delivery on it.
    email = shown[0][0]
    subscriber, delivery = next((sub, delivery) for delivery, (sub, address) in failed.items() if address == email)
    page.get_by_role("link", name=email, exact=True).click()
    page.wait_for_url(f"{base}/staff/subscribers/{subscriber}")
    assert page.get_by_role("heading", level=1).inner_text().strip() == email
    line = page.locator(f'tr:has(a[href="/staff/sends/{send_id}"])')
    assert line.count() == 1 and "failed" in line.inner_text()
    assert _statuses(store, send_id)[delivery][0] == "failed"
    check(page, "subscriber")

    # Retry the failed ones through the confirmation page.
    before = _statuses(store, send_id)
    transient = {key for key, (status, kind) in before.items() if status == "failed" and kind == "transient"}
    permanent = {key for key, (status, kind) in before.items() if status == "failed" and kind == "permanent"}
    assert len(transient) == TRANSIENT and len(permanent) == PERMANENT
    page.goto(f"{base}/staff/sends/{send_id}", wait_until="load")
    page.get_by_role("link", name="Retry failed").click()
    page.wait_for_url(f"{base}/staff/sends/{send_id}/retry")
    assert f"{TRANSIENT} recipient(s) whose delivery failed" in page.inner_text("#effect")
    check(page, "retry-confirm")
    page.get_by_label("I understand: retry failed").check()
    page.get_by_role("button", name="Retry failed").click()
    page.wait_for_url(f"{base}/staff/sends/{send_id}?done=retry")
    assert "newsletter run" in page.get_by_role("status").inner_text()
    check(page, "retried")
    after = _statuses(store, send_id)
    moved = {key for key in before if after[key] != before[key]}
    assert moved == transient  # exactly the transient failures were touched ...
    assert {after[key][0] for key in transient} == {"queued"}  # ... and queued again
    assert {after[key][0] for key in permanent} == {"failed"}
    assert db.send_record(store, send_id).status == SendStatus.SENDING  # handed to `newsletter run`
    retries = [entry for entry in staff_db.audit_log(store) if entry.action == "send retry"]
    assert [(entry.user_name, entry.target) for entry in retries] == [("ed", f"send {send_id}")]
    assert f"{TRANSIENT} row(s) queued again" in retries[0].detail

    # Cancel the scheduled send through the schedule and its confirmation.
    assert db.send_record(store, world.planned).status == SendStatus.SCHEDULED
    page.goto(f"{base}/staff/schedule", wait_until="load")
    check(page, "schedule")
    page.get_by_role("link", name=f"Cancel send {world.planned}", exact=True).click()
    page.wait_for_url(f"{base}/staff/schedule/{world.planned}/cancel")
    check(page, "cancel-confirm")
    page.get_by_role("button", name=f"Cancel send {world.planned}").click()
    page.wait_for_url(f"{base}/staff/schedule?*done=cancelled*")
    check(page, "cancelled")
    past = page.get_by_role("region", name="Sends that had a time, newest first")
    assert past.get_by_role("link", name=str(world.planned), exact=True).count() == 1  # it will never go out
    assert page.get_by_role("region", name="Scheduled sends, soonest first").count() == 0
    assert db.send_record(store, world.planned).status == SendStatus.CANCELLED
    assert [(entry.user_name, entry.target) for entry in staff_db.audit_log(store)
            if entry.action == "schedule cancel"] == [("ed", f"send:{world.planned}")]
    page.goto(f"{base}/staff/audit", wait_until="load")
    assert "send retry" in page.inner_text("main") and "schedule cancel" in page.inner_text("main")
    check(page, "audit")

    assert not check.problems, "\n".join(check.problems)


ACTION_LINK = re.compile(r"/staff/(sends/\d+/(" + "|".join(ACTIONS) + r"|test)|schedule/\d+/(move|cancel))$")


def _action_links(page) -> list[str]:
    hrefs = page.eval_on_selector_all("a[href], form[action]",
                                      "nodes => nodes.map(n => n.getAttribute('href') || n.getAttribute('action'))")
    return [href for href in hrefs if ACTION_LINK.search(href.split("?")[0])]


def test_a_viewer_sees_no_action_and_is_refused_every_one(page, world: World) -> None:
    base, store, send_id = world.base, world.store, world.send_id
    check = Checker("viewer")
    _sign_in(page, base, "vera", check)
    for name, path in (("sends", "/staff/sends"), ("send", f"/staff/sends/{send_id}"),
                       ("failed", f"/staff/sends/{send_id}?status=failed"),
                       ("scheduled-send", f"/staff/sends/{world.planned}"), ("schedule", "/staff/schedule")):
        page.goto(base + path, wait_until="load")
        assert page.url == base + path  # not sent elsewhere
        assert _action_links(page) == [], (name, _action_links(page))
        assert page.locator("#test-addresses").count() == 0
        for title in ("Pause", "Resume", "Cancel", "Retry failed", "Resend uncertain", "Send test", "Move"):
            assert page.get_by_role("link", name=title).count() == 0, (name, title)
            assert page.get_by_role("button", name=title).count() == 0, (name, title)
        check(page, name)
    page.goto(f"{base}/staff/sends/{send_id}", wait_until="load")
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert token  # the viewer's own valid token: what refuses them is their role
    before = _statuses(store, send_id)
    refused = []
    targets = [f"/staff/sends/{send_id}/{name}" for name in ACTIONS] + \
              [f"/staff/sends/{world.planned}/cancel", f"/staff/schedule/{world.planned}/move",
               f"/staff/schedule/{world.planned}/cancel"]
    for path in targets:
        shown = page.goto(base + path, wait_until="load")
        assert shown is not None
        refused.append((path, "GET", shown.status))
        answer = page.request.post(base + path, form={"csrf_token": token, "confirm": "yes",
                                                      "at": "2030-01-01T09:00"}, max_redirects=0)
        refused.append((path, "POST", answer.status))
    answer = page.request.post(f"{base}/staff/sends/{send_id}/test", form={"csrf_token": token,
                                                                           "addresses": "me@example.org"})
    refused.append(("test", "POST", answer.status))
    assert {status for _, _, status in refused} == {403}, [item for item in refused if item[2] != 403]
    assert "Your role does not allow this." in page.inner_text("main")
    check(page, "refused")
    assert _statuses(store, send_id) == before
    assert db.send_record(store, world.planned).status == SendStatus.SCHEDULED
    assert not [entry for entry in staff_db.audit_log(store) if entry.user_name == "vera"
                and entry.action != "sign-in"]
    assert not check.problems, "\n".join(check.problems)
