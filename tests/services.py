"""Real servers the tests run against: a throwaway PostgreSQL from Debian's `postgresql` package."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

POSTGRES_BINARIES = "/usr/lib/postgresql/*/bin"
RUN_AS = "postgres"
"""initdb and postgres refuse to run as root: as root, they run as this (Debian's) user."""


def free_port() -> int:
    """A TCP port nobody listens on now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (the newest version installed); RuntimeError when there is none."""
    found = sorted(glob.glob(f"{POSTGRES_BINARIES}/postgres"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError(
            f"PostgreSQL is not installed (no {POSTGRES_BINARIES}/postgres): `make postgres` (or `apt-get install postgresql`) installs it"
        )
    return Path(found[-1]).parent


class PostgresServer:
    """A PostgreSQL server in a temporary folder on a free loopback port: trust auth, fsync on, one database per `create_database`.

    `start()` runs initdb and the server and waits until it accepts connections; `stop()` stops it and
    removes the folder. As root, both run as the `postgres` user (the folder is given to it).
    """

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="assistant-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = RUN_AS if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that run a program as the data folder's owner (RUN_AS when we are root)."""
        if os.geteuid() != 0:
            return {"cwd": self.dir}
        return {"cwd": self.dir, "user": RUN_AS, "group": RUN_AS, "extra_groups": []}

    def start(self, timeout_s: float = 60) -> PostgresServer:
        """initdb, start the server, wait until it takes connections."""
        if os.geteuid() == 0:
            shutil.chown(self.dir, RUN_AS, RUN_AS)
        initdb = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "--encoding=UTF8", "--no-instructions"],
            capture_output=True, text=True, **self._as_owner(),
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()[-2000:]}")
        log = open(self.dir / "server.log", "wb")  # the server keeps its own copy of the descriptor
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.dir),
                "-c", "fsync=on", "-c", "max_connections=200", "-c", "shared_buffers=16MB",
            ],
            stdout=log, stderr=subprocess.STDOUT, **self._as_owner(),
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start: {(self.dir / 'server.log').read_text()[-2000:]}") from None
                time.sleep(0.1)

    def dsn(self, database: str) -> str:
        """A libpq connection string for `database`."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database`, disconnecting whoever is still connected."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (a fast shutdown) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: connected clients are disconnected
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
