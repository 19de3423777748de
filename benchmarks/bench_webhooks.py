"""Benchmark webhook ingestion: SendGrid-style signed batches of 1,000 events into ``newsletter serve``.

A temporary copy of the sample project (SQLite, the outbox provider) gets an audience of 10,000 and a real
send of an edition to them, so that every event names a delivery row. Then:

1. the baseline: the same signed requests, one after another, to an app under uvicorn (the same guard, in
   its own process) whose endpoint only reads the body and answers 200: what HTTP and the body cost;
2. ingestion: ``newsletter serve`` (the real command, uvicorn, SQLite) takes them at /webhooks/sendgrid:
   signature checked, parsed, recorded and applied (delivery rows, suppressions, soft-bounce counts).

The events: 90 % delivered, 4 % hard bounces, 4 % blocks (soft bounces), 2 % spam reports, each with its
own ``sg_event_id`` and our ``send``/``delivery`` custom args. Figures are printed, not asserted
(expected: at least 2,000 events/s ingested).

Run from the project root:  .venv/bin/python benchmarks/bench_webhooks.py [--batches 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000
AUDIENCE = 10_000
SECRET = "a-benchmark-signing-secret-of-32-bytes-at-least"

BASELINE_APP = textwrap.dedent("""
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from pipeline.web.guard import Guard

    async def read_only(request):
        body = await request.body()
        return PlainTextResponse(f"read {len(body)} bytes")

    app = Starlette(routes=[Route("/webhooks/sendgrid", read_only, methods=["POST"])],
                    middleware=[Middleware(Guard, max_body_bytes=1024 * 1024, https=False)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_project(folder: Path) -> Path:
    shutil.copy(ROOT / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "drafts", folder / "drafts")
    return folder / "newsletter.toml"


def sent_deliveries(config: Path) -> list[tuple[int, int, str]]:
    """Send an edition to AUDIENCE subscribers through the outbox; (delivery id, send id, address) of each."""
    from pipeline import send
    from pipeline.config import load_settings
    from pipeline.prepare import prepare_and_write
    from pipeline.store import Store
    from pipeline.store.tables import deliveries
    from pipeline.subscribers import import_subscribers

    os.environ["NEWSLETTER_SECRET"] = SECRET
    settings = load_settings(config)
    settings = settings.model_copy(update={"provider": settings.provider.model_copy(update={"batch_size": 1000})})
    store = Store.from_settings(settings)
    audience = config.parent / "audience.csv"
    audience.write_text("email,name,tags,status\n" + "".join(
        f"reader{number:05d}@example.net,Reader {number},policy,active\n" for number in range(AUDIENCE)))
    import_subscribers(store, audience)
    draft = config.parent / "drafts" / "2024-03-01-bench"
    draft.mkdir()
    (draft / "draft.md").write_text("---\nsubject: Hello\npreheader: A benchmark\ndate: 2024-03-01\n---\n"
                                    "Dear {{ name }},\n\nA [link](https://www.ft.com/).\n\n[SIGNOFF]\n\nJoe\n\n"
                                    "Joe is an editor. This article represents his own personal opinion: he alone "
                                    "is responsible for the entirety of its contents.\n")
    built = prepare_and_write(draft, settings)
    send_id = send.create_send(store, settings, built.edition, built_path=str(built.folder))
    asyncio.run(send.run_send(store, settings, send_id))
    with store.read() as connection:
        rows = [(row.id, row.send_id, row.email) for row in connection.execute(
            select(deliveries.c.id, deliveries.c.send_id, deliveries.c.email).order_by(deliveries.c.id))]
    store.dispose()
    return rows


def batches(rows: list[tuple[int, int, str]], count: int, seed: int = 5) -> list[bytes]:
    draw = random.Random(seed)
    bodies, now = [], int(time.time())
    for number in range(count):
        events = []
        for index in range(BATCH):
            delivery, send_id, email = rows[(number * BATCH + index) % len(rows)]
            point = draw.random()
            name, extra = (("delivered", {}) if point < 0.90 else
                           ("bounce", {"type": "bounce", "reason": "550 5.1.1 no such user"}) if point < 0.94 else
                           ("bounce", {"type": "blocked", "reason": "452 mailbox full"}) if point < 0.98 else
                           ("spamreport", {}))
            events.append({"email": email, "timestamp": now, "event": name, "sg_event_id": f"ev{number}-{index}",
                           "sg_message_id": f"{'m' * 22}.filterdrecv-1-0.0", "send": str(send_id),
                           "delivery": str(delivery), **extra})
        bodies.append(json.dumps(events).encode())
    return bodies


def post_all(url: str, bodies: list[bytes], private_key: ec.EllipticCurvePrivateKey) -> float:
    """Post every body (signed just before timing starts) one after another; the seconds it took."""
    from pipeline.webhooks.signatures import sign_sendgrid

    stamp = int(time.time())
    signed = [(body, sign_sendgrid(private_key, body, stamp)) for body in bodies]
    with httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        for body, headers in signed:
            response = client.post(url, content=body, headers={**headers, "Content-Type": "application/json"})
            if response.status_code != 200:
                raise SystemExit(f"{url}: {response.status_code} {response.text}")
        return time.perf_counter() - started


def wait_listening(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def run_server(command: list[str], env: dict[str, str], port: int, what: str, cwd: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, process, what)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="requests of 1,000 events (default 20)")
    args = parser.parse_args()
    from pipeline.webhooks.signatures import new_sendgrid_key

    private_key, public_key = new_sendgrid_key()
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as temp:
        config = make_project(Path(temp))
        print(f"sending an edition to {AUDIENCE:,} subscribers through the outbox ...", flush=True)
        rows = sent_deliveries(config)
        bodies = batches(rows, args.batches)
        events = args.batches * BATCH
        env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "NEWSLETTER_CONFIG": str(config),
               "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key, "PYTHONPATH": str(ROOT)}

        port = free_port()
        baseline = run_server([sys.executable, "-c", BASELINE_APP, str(port)], env, port, "the baseline", ROOT)
        try:
            base_s = post_all(f"http://127.0.0.1:{port}/webhooks/sendgrid", bodies, private_key)
        finally:
            stop(baseline)

        port = free_port()
        serve = run_server([sys.executable, "-m", "pipeline", "serve", "--port", str(port)], env, port,
                           "newsletter serve", Path(temp))
        try:
            ingest_s = post_all(f"http://127.0.0.1:{port}/webhooks/sendgrid", bodies, private_key)
        finally:
            stop(serve)
        stored = count_events(config)

    print(f"{args.batches} signed SendGrid batches of {BATCH:,} events ({len(bodies[0]) / 1024:.0f} KB each), "
          f"{events:,} events, sequential requests over loopback")
    print(f"  baseline (read the body only): {events / base_s:10,.0f} events/s  ({base_s * 1000 / len(bodies):.1f} "
          "ms per request)")
    print(f"  newsletter serve, ingesting:   {events / ingest_s:10,.0f} events/s  "
          f"({ingest_s * 1000 / len(bodies):.1f} ms per request; {stored:,} events stored)")
    print(f"  ratio ingest / baseline:       {base_s / ingest_s:10.2f}   (expected: at least 2,000 events/s)")


def count_events(config: Path) -> int:
    from pipeline.config import load_settings
    from pipeline.store import Store
    from pipeline.store.tables import events

    store = Store.from_settings(load_settings(config))
    with store.read() as connection:
        count = int(connection.scalar(select(func.count()).select_from(events).where(events.c.event_key.is_not(None)))
                    or 0)
    store.dispose()
    return count


if __name__ == "__main__":
    main()
