"""Run the pinned QuestDB server: write its config, start it, wait for health, stop it.

Why here: the supervisor (`ktape up`), the test fixtures and the benchmarks all need the
same server with the same settings (telemetry off, every port from the environment, data
under `$KTAPE_DATA_DIR/questdb`), so there is exactly one place that knows how.

Durability: we keep QuestDB's default `cairo.commit.mode=nosync`. A committed WAL
transaction then survives a QuestDB (or JVM) crash but not an OS crash or power loss;
fsync per commit would cap ingest throughput on the small disks this runs on. Operators
that need OS-crash durability set `KTAPE_QUESTDB_COMMIT_MODE=sync` (see docs/operations.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ktape.config import HostPort
from ktape.log import get_logger
from ktape.runtime.java import find_java
from ktape.runtime.pins import pins, questdb_jar

log = get_logger(__name__)

STOP_TIMEOUT_SECS = 10.0


def write_server_conf(root: Path, http: HostPort, pg: HostPort, *, memory_limited: bool) -> Path:
    """Write `<root>/conf/server.conf`; only the two ports we use are opened.

    ILP over TCP/UDP and the minimal health server stay off: ingestd speaks ILP over HTTP
    (errors come back), and health is read from the main HTTP port.
    """
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    commit_mode = os.environ.get("KTAPE_QUESTDB_COMMIT_MODE", "nosync")
    if commit_mode not in ("nosync", "async", "sync"):
        raise ValueError(f"KTAPE_QUESTDB_COMMIT_MODE={commit_mode!r}: expected nosync|async|sync")
    lines = [
        "# written by ktape (ktape/runtime/questdb.py); edits are overwritten at start",
        f"http.net.bind.to={http.host}:{http.port}",
        f"pg.net.bind.to={pg.host}:{pg.port}",
        "line.tcp.enabled=false",
        "line.udp.enabled=false",
        "http.min.enabled=false",
        "telemetry.enabled=false",
        # Tables and columns come only from ktape's migrations (types, DEDUP keys): an ILP
        # row for a missing table or column is an error to see, not a table to invent.
        "line.auto.create.new.tables=false",
        "line.auto.create.new.columns=false",
        "telemetry.disable.completely=true",
        f"cairo.commit.mode={commit_mode}",
        # Tickers are symbols; size the symbol tables for years of markets.
        "cairo.default.symbol.capacity=4096",
        # Days the storage lifecycle job converts to Parquet (off unless
        # KTAPE_PARQUET_AFTER_DAYS): ZSTD takes half the bytes of the default LZ4_RAW for
        # book changes, at a slower conversion (docs/performance.md, "Storage cost").
        "cairo.partition.encoder.parquet.compression.codec=ZSTD",
        "cairo.partition.encoder.parquet.compression.level=9",
        # Small machines: keep the shared worker pools modest.
        "shared.worker.count=2",
        "http.worker.count=1",
        "pg.worker.count=1",
    ]
    if memory_limited:
        lines += ["http.connection.pool.initial.capacity=8", "pg.connection.pool.capacity=16"]
    path = conf_dir / "server.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def server_command(root: Path, *, heap_mb: int = 1024) -> list[str]:
    java = find_java(int(pins()["QUESTDB_MIN_JAVA"]))
    return [
        str(java.executable),
        f"-Xmx{heap_mb}m",
        "-XX:+UseParallelGC",
        "-Dout=" + str(root / "log" / "stdout.log"),
        "-p",
        str(questdb_jar()),
        "-m",
        "io.questdb/io.questdb.ServerMain",
        "-d",
        str(root),
    ]


def is_healthy(http: HostPort, timeout_secs: float = 2.0) -> bool:
    """True when QuestDB answers a trivial SQL query over HTTP."""
    try:
        resp = httpx.get(
            f"http://{http}/exec", params={"query": "SELECT 1"}, timeout=timeout_secs
        )
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


@dataclass
class QuestDBProcess:
    """A QuestDB server child process (sync API, for tests, benches and the CLI).

    `with QuestDBProcess(root, http, pg) as qdb:` starts it, waits until it answers SQL,
    and on exit stops it by PID (SIGTERM, then SIGKILL after STOP_TIMEOUT_SECS).
    """

    root: Path
    http: HostPort
    pg: HostPort
    heap_mb: int = 1024
    start_timeout_secs: float = 90.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("QuestDBProcess already started")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        write_server_conf(self.root, self.http, self.pg, memory_limited=True)
        out = open(self.root / "log" / "ktape-questdb.out", "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                server_command(self.root, heap_mb=self.heap_mb),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()
        log.info("questdb.starting", pid=self.proc.pid, http=str(self.http), pg=str(self.pg))
        self.wait_healthy()

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_secs
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"questdb exited with {self.proc.returncode} during start; "
                    f"see {self.root / 'log'}"
                )
            if is_healthy(self.http):
                log.info("questdb.ready", pid=self.proc.pid, http=str(self.http))
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"questdb not healthy after {self.start_timeout_secs}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            log.warning("questdb.kill_after_timeout", pid=proc.pid)
            proc.kill()
            proc.wait()
        log.info("questdb.stopped", pid=proc.pid, returncode=proc.returncode)

    def __enter__(self) -> QuestDBProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
