"""The two servers bench_send.py measures against, each in a process of its own: the emulator and the sink.

Both are started on a free loopback port from an empty folder (no settings), print their URL, and keep
what a measurement needs in their statistics: requests and messages per provider, the answers, the
sending phase (``time.monotonic`` at the first request and the last answer: the server's own view of
how long the sending took) and the digest of the bodies (``pipeline.emulator.digest``), which tells
whether two runs posted the same bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_S = 30.0


@dataclass(frozen=True, kw_only=True)
class Reading:
    """What a server saw of one measurement, for one provider."""

    messages: int
    requests: int
    request_bytes: int | None  # the sink counts them; the emulator does not
    answers_ok: bool  # every answer 2xx, no fault injected
    answers: dict[str, int]
    phase_s: float | None  # first request received to last answer written
    bodies: str  # "count:sha256-sum"

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "requests": self.requests, "request_bytes": self.request_bytes,
                "answers_ok": self.answers_ok, "answers": self.answers, "phase_s": self.phase_s,
                "bodies": self.bodies}


class ServerProcess:
    """A server in a separate process, so that its CPU does not share the sender's GIL."""

    name: str
    control: str  # the control API's prefix

    def __init__(self, command: list[str]):
        self.folder = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log_path = self.folder / "server.log"
        environment = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        with self.log_path.open("w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, env=environment, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        try:
            self.url = self._wait_url()
            self.http = httpx.Client(base_url=self.url, timeout=120)
            self._wait_answering()
        except BaseException:
            self.stop()
            raise

    def _wait_url(self) -> str:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+)", self.log_path.read_text(encoding="utf-8"))
            if found:
                return found[1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"the {self.name} did not start:\n{self.log_path.read_text(encoding='utf-8')}")

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            try:
                if self.http.get(f"{self.control}/stats").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"the {self.name} at {self.url} does not answer")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (from /proc/PID/stat)."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def reset(self) -> None:
        self.http.post(f"{self.control}/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.http.get(f"{self.control}/stats")
        response.raise_for_status()
        return response.json()

    def reading(self, provider: str) -> Reading:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGINT, then harder if need be."""
        if hasattr(self, "http"):
            self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _bodies(stats: dict[str, Any]) -> str:
    return f"{stats['bodies']['count']}:{stats['bodies']['hash']}:{stats['bodies']['sum']}"


class EmulatorProcess(ServerProcess):
    """``python -m pipeline emulator --port 0``: validates every request and records every message."""

    name = "emulator"
    control = "/_emulator"

    def __init__(self) -> None:
        super().__init__([sys.executable, "-m", "pipeline", "emulator", "--host", "127.0.0.1", "--port", "0"])

    def reading(self, provider: str) -> Reading:
        stats = self.stats()
        answers = stats["responses"][provider]
        return Reading(messages=stats["messages"][provider], requests=stats["requests"][provider],
                       request_bytes=None, answers=answers, phase_s=stats["sending"]["seconds"],
                       answers_ok=all(status.startswith("2") for status in answers) and not stats["faults_injected"],
                       bodies=_bodies(stats))

    def message(self, provider: str, offset: int) -> dict[str, Any]:
        response = self.http.get("/_emulator/messages", params={"provider": provider, "offset": offset, "limit": 1})
        response.raise_for_status()
        return response.json()["messages"][0]


class SinkProcess(ServerProcess):
    """``benchmarks/sink.py --port 0``: reads each body and answers as the provider would, nothing more."""

    name = "sink"
    control = "/_sink"

    def __init__(self) -> None:
        super().__init__([sys.executable, str(ROOT / "benchmarks" / "sink.py"), "--port", "0"])

    def reading(self, provider: str) -> Reading:
        stats = self.stats()
        answers = {key.split()[1]: count for key, count in stats["answers"].items() if key.split()[0] == provider}
        return Reading(messages=stats["messages"].get(provider, 0), requests=stats["requests"].get(provider, 0),
                       request_bytes=stats["bytes"].get(provider, 0), answers=answers,
                       phase_s=stats["sending"]["seconds"],
                       answers_ok=bool(answers) and all(status.startswith("2") for status in answers),
                       bodies=_bodies(stats))
