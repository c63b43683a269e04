"""A private PostgreSQL server from Debian's binaries, for tests and benchmarks.

initdb into a fresh directory, `postgres` on a loopback port (fsync off: the data is
disposable), stopped by PID. As root, the server runs as the `postgres` system user
(PostgreSQL refuses root); Popen's user= makes the child the server itself, so the PID
we hold is the one to signal.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from ktape.runtime.pins import REPO_ROOT
from ktape.runtime.ports import free_port


def postgres_bin_dir() -> Path:
    """Installs Debian's postgresql if missing (infra/install_postgres.sh)."""
    out = subprocess.run(["bash", str(REPO_ROOT / "infra" / "install_postgres.sh")],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def _owner() -> dict[str, str]:
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


class PostgresProcess:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="ktape-pg-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://ktape@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 30.0) -> PostgresProcess:
        bin_dir = postgres_bin_dir()
        data, sockets = self.root / "data", self.root / "sock"
        sockets.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root, sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "ktape", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                       cwd=self.root, **_owner())
        self.port = free_port()
        with open(self.root / "postgres.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(sockets), "-F", "-c", "max_connections=200"],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                **_owner())
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not start:\n"
                                       + (self.root / "postgres.log").read_text()[-2000:]) from None
                time.sleep(0.2)

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
