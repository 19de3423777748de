"""A throwaway PostgreSQL cluster for the tests: ``initdb`` and ``pg_ctl`` on a free loopback port.

The server refuses to run as root, so as root the cluster belongs to the ``postgres`` user
(its binaries run through ``runuser``); as anyone else it belongs to that user. It listens on
127.0.0.1 only (no Unix socket), trusts local connections, and trades durability for speed
(``fsync=off``): it is thrown away with its folder when the tests end.

    cluster = Cluster.start(Path("/tmp/somewhere"))
    url = cluster.create_database("store_1")   # postgresql+psycopg://postgres@127.0.0.1:PORT/store_1
    cluster.restart()                          # a real restart, for outage tests
    cluster.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
}


class ClusterError(RuntimeError):
    """The cluster could not be made or started; the message says which command failed and why."""


def bin_dir() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda path: path.parent.parent.name)
    return versions[-1].parent if versions else None


def available() -> bool:
    return bin_dir() is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster: its folder, port and the programs that drive it."""

    folder: Path
    port: int
    bin: Path

    @classmethod
    def start(cls, parent: Path | None = None) -> Cluster:
        programs = bin_dir()
        if programs is None:
            raise ClusterError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                               "apt-get install postgresql-15")
        folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-", dir=parent))
        folder.chmod(0o755)
        cluster = cls(folder=folder, port=free_port(), bin=programs)
        if os.geteuid() == 0:
            shutil.chown(folder, SUPERUSER, SUPERUSER)
        cluster._run("initdb", "-D", str(cluster.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                     "--locale=C.UTF-8", "--no-sync")
        with (cluster.data / "postgresql.conf").open("a") as conf:
            for name, value in {**SERVER_SETTINGS, "port": str(cluster.port)}.items():
                conf.write(f"{name} = '{value}'\n")
        cluster._pg_ctl("start")
        return cluster

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql; its output."""
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                         "-v", "ON_ERROR_STOP=1", "-At", "-c", statement)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new, empty database (or a copy of ``template``); its SQLAlchemy URL."""
        copy = f" TEMPLATE {template}" if template else ""
        self.sql(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart(self, *, down_seconds: float = 0.0) -> None:
        """Stop the server (fast: open connections are cut), stay down ``down_seconds``, start it again."""
        self.down()
        if down_seconds:
            time.sleep(down_seconds)
        self.up()

    def down(self) -> None:
        """Stop the server, cutting open connections (an outage: ``up`` ends it)."""
        self._pg_ctl("stop", "-m", "fast")

    def up(self) -> None:
        """Start the server again after ``down``; returns once it accepts connections."""
        self._pg_ctl("start")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except ClusterError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> str:
        return self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                         *args)

    def _run(self, program: str, *args: str) -> str:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder, check=False)
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ClusterError(f"{program} {' '.join(args[:2])} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{tail}")
        return done.stdout
