"""Running the emulator: in a background thread for tests and benchmarks, or in the foreground."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from pipeline.emulator.app import create_app
from pipeline.emulator.state import Emulator, FaultPlan
from pipeline.emulator.webhooks import Outcome, WebhookPlan, WebhookPoster

T = TypeVar("T")
START_TIMEOUT_S = 10.0


def _config(app: Any, **options: Any) -> uvicorn.Config:
    # No access log: nothing about a request is written, least of all its keys.
    return uvicorn.Config(app, http="h11", lifespan="off", access_log=False, log_level="warning",
                          timeout_graceful_shutdown=1, **options)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 takes a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted sockets only when the
    # protocol says TCP, and without it every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket, emulator: Emulator) -> None:
    try:
        await server.serve(sockets=[sock])
    finally:
        if emulator.webhooks is not None:
            await emulator.webhooks.aclose()


class EmulatorHandle:
    """A running emulator: ``url`` to point providers at, ``emulator`` for its state; a context manager."""

    def __init__(self, emulator: Emulator, sock: socket.socket):
        self.emulator = emulator
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.host, self.port = host, port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self._server = uvicorn.Server(_config(create_app(emulator)))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"emulator:{port}", daemon=True)
        self._thread.start()
        self._wait_started()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(_serve(self._server, self._socket, self.emulator))
        finally:
            self._loop.close()

    def _wait_started(self) -> None:
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > START_TIMEOUT_S:
                raise RuntimeError(f"the emulator did not start on {self.url}")
            self._thread.join(0.01)
            waited += 0.01

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server's event loop (where the state lives) and return its result."""
        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def messages(self, **filters: Any) -> list[dict[str, Any]]:
        """Recorded messages as the control API returns them; filters: provider, to, batch, offset, limit."""
        return self.call(lambda: [record.to_dict() for record in self.emulator.mailbox.find(**filters)[1]])

    def stats(self) -> dict[str, Any]:
        return self.call(self.emulator.stats)

    @property
    def webhooks(self) -> WebhookPoster:
        """The webhook poster (the emulator must have been started with a WebhookPlan)."""
        if self.emulator.webhooks is None:
            raise RuntimeError("the emulator was started without webhooks")
        return self.emulator.webhooks

    def webhook_outcomes(self) -> list[Outcome]:
        """Every outcome decided so far, in the order the messages were accepted."""
        return self.call(lambda: list(self.webhooks.outcomes))

    def wait_for_webhooks(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until every event was posted (or given up on); the poster's summary."""
        deadline = time.monotonic() + timeout
        while not self.call(lambda: self.webhooks.settled):
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhooks still being posted after {timeout:g} s")
            time.sleep(0.05)
        return self.call(self.webhooks.summary)

    def reset(self) -> None:
        self.call(self.emulator.reset)

    def set_faults(self, plan: dict[str, Any]) -> None:
        """Configure faults as ``POST /_emulator/faults`` would (the plan is not checked here)."""
        self.call(lambda: self.emulator.faults.configure(FaultPlan.from_json(plan, default_seed=self.emulator.seed)))

    def stop(self) -> None:
        """Stop serving (requests in flight get a second to finish) and wait for the thread."""
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def run_emulator_in_thread(port: int = 0, keys: dict[str, str] | None = None, *, host: str = "127.0.0.1",
                           seed: int | None = None, webhooks: WebhookPlan | None = None) -> EmulatorHandle:
    """Start the emulator on ``host:port`` (0: any free port) in a background thread.

    ``keys`` maps a provider name to the key it accepts (default ``emulator-key``); ``seed``
    makes fault draws and message ids reproducible; ``webhooks`` makes it post the events of what it
    accepts (``handle.webhooks.keys`` are what it signs with). Use it as a context manager, or call
    ``stop()``.
    """
    emulator = Emulator(keys=dict(keys or {}), seed=seed, webhooks=WebhookPoster(webhooks) if webhooks else None)
    return EmulatorHandle(emulator, bind(host, port))


def serve(host: str, port: int, *, keys: dict[str, str] | None = None, seed: int | None = None,
          webhooks: WebhookPoster | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until interrupted; ``on_ready`` gets the URL once the socket listens."""
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    emulator = Emulator(keys=dict(keys or {}), seed=seed, webhooks=webhooks)
    server = uvicorn.Server(_config(create_app(emulator)))
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    if on_ready is not None:
        on_ready(url)
    try:
        server.run(sockets=[sock])  # asyncio.run: the webhook poster's workers are cancelled when it ends
    finally:
        sock.close()
