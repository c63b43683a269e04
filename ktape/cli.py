"""The `ktape` command: up, sim, status, logs, keys, backfill.

Each subcommand parses its own flags and hands off to the module that owns the work; this
file only wires them together and turns configuration errors into one clear line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from ktape.config import MAX_PROCESSES, Settings
from ktape.entrypoint import settings_or_report
from ktape.log import configure_logging, get_logger

log = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktape",
        description="ktape: complete Kalshi order-book history, recorded and served.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run every service under one supervisor (foreground)")
    up.add_argument("--simulator", action="store_true",
                    help="start `ktape sim` and point ingestd at it instead of Kalshi")
    up.add_argument("--sim-seed", type=int, default=42, help="simulator seed (default 42)")
    up.add_argument("--sim-markets", type=int, default=200,
                    help="simulated markets (default 200)")
    up.add_argument("--sim-rate", type=int, default=200,
                    help="simulated book changes per second (default 200)")
    up.add_argument("--queryd-replicas", type=_count, metavar="N",
                    help="queryd processes behind Envoy (default KTAPE_QUERYD_REPLICAS or 1)")
    up.add_argument("--ingest-shards", type=_count, metavar="M",
                    help="ingestd processes splitting the markets by ticker (default "
                         "KTAPE_INGEST_SHARDS or 1)")

    sub.add_parser("sim", help="the Kalshi-compatible exchange simulator (see `ktape sim --help`)",
                   add_help=False)

    status = sub.add_parser("status", help="health of every component")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    logs = sub.add_parser("logs", help="follow a component's log (`ktape up` writes one per "
                                       "component under the data dir)")
    logs.add_argument("component", nargs="?", help="questdb, ingestd, queryd, billingd, "
                      "consoled, datasetd, envoy, sim; with several replicas or shards "
                      "queryd-0, ingestd-1... (none: list the logs)")
    logs.add_argument("--lines", type=int, default=40, help="lines to show first (default 40)")
    logs.add_argument("--no-follow", action="store_true", help="print and exit")

    sub.add_parser("keys", help="API keys (see `ktape keys --help`)", add_help=False)
    sub.add_parser("backfill", help="fill history from Kalshi REST (see `ktape backfill --help`)",
                   add_help=False)
    sub.add_parser("datasets", help="daily Parquet/CSV files (see `ktape datasets --help`)",
                   add_help=False)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"expected a whole number 1-{MAX_PROCESSES}, "
                                         f"got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Subcommands owned elsewhere get their raw arguments (their own --help included).
    if args_list and args_list[0] in ("sim", "keys", "backfill", "datasets"):
        return _delegate(args_list[0], args_list[1:])
    args = build_parser().parse_args(args_list)
    if args.command == "up":
        # The flags are the variables every child reads (and `ktape status` after them).
        for flag, variable in ((args.queryd_replicas, "KTAPE_QUERYD_REPLICAS"),
                               (args.ingest_shards, "KTAPE_INGEST_SHARDS")):
            if flag is not None:
                os.environ[variable] = str(flag)
    settings = settings_or_report("ktape")
    if settings is None:
        return 2
    if args.command == "up":
        configure_logging(component="supervisor")
        return asyncio.run(_up(settings, args))
    if args.command == "status":
        configure_logging(component="cli")
        return asyncio.run(_status(settings, as_json=args.json))
    if args.command == "logs":
        return _logs(settings.data_dir / "logs", args.component, args.lines,
                     follow=not args.no_follow)
    raise AssertionError(args.command)


def _logs(directory: Path, component: str | None, lines: int, *, follow: bool) -> int:
    """Print the end of a component's log and follow it (like `tail -f`)."""
    if component is None:
        found = sorted(directory.glob("*.log")) if directory.is_dir() else []
        for path in found:
            print(f"{path.stem:<10} {path}  ({path.stat().st_size} bytes)")
        if not found:
            print(f"no logs in {directory} yet (`ktape up` writes them)", file=sys.stderr)
        return 0
    path = directory / f"{component}.log"
    if not path.exists():
        print(f"no log {path}", file=sys.stderr)
        return 1
    with open(path, errors="replace") as log_file:
        for line in deque(log_file, maxlen=lines):
            print(line, end="")
        while follow:
            line = log_file.readline()
            if line:
                print(line, end="", flush=True)
            else:
                time.sleep(0.25)
    return 0


def _delegate(command: str, rest: list[str]) -> int:
    if command == "sim":
        from ktape.sim.cli import main as sim_main

        return sim_main(rest)
    # The services' own entry points, in their own process: the shared floor (ktape/)
    # never imports a service. exec keeps the exit code and the signals the user's.
    module = {"backfill": "ingestd.backfill", "keys": "billingd.keys_cli",
              "datasets": "datasetd.cli"}[command]
    os.execv(sys.executable, [sys.executable, "-m", module, *rest])


async def _create_demo_key(billing_dsn: str) -> str:
    """A dev key with credits for `make demo`, made by billingd's own key command in its
    own process (ktape/ imports no service); "" if that failed (logged)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "billingd.keys_cli", "create", "--account", "demo",
        "--credits", "1000", "--env", "dev", "--name", "make demo",
        env={**os.environ, "KTAPE_BILLING_DSN": billing_dsn},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        log.error("stack.demo_key_failed", code=proc.returncode,
                  error=err.decode(errors="replace")[-500:])
        return ""
    return out.decode().strip()


async def _up(settings: Settings, args: argparse.Namespace) -> int:
    from ktape.child_logs import ChildLogs
    from ktape.stack import StackOptions, build_stack
    from ktape.status import STATE_FILE, write_stack_state
    from ktape.supervisor import ChildFailed, Supervisor

    options = StackOptions(
        simulator=args.simulator, sim_seed=args.sim_seed, sim_markets=args.sim_markets,
        sim_rate=args.sim_rate,
    )
    try:
        specs = build_stack(settings, options)
    except (FileNotFoundError, RuntimeError) as exc:
        log.error("supervisor.setup_failed", error=str(exc))
        return 1
    child_logs = ChildLogs(settings.data_dir / "logs")
    state_path = settings.data_dir / STATE_FILE
    supervisor = Supervisor(specs, sink=child_logs, on_change=lambda sup: write_stack_state(
        state_path, settings, sup.snapshot()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def announce() -> None:
        while not all(c.ready for c in supervisor.children.values()):
            if stop.is_set():
                return
            await asyncio.sleep(0.2)
        demo_key = ""
        if args.simulator and settings.billing_dsn_effective.startswith("sqlite:///"):
            demo_key = await _create_demo_key(settings.billing_dsn_effective)
        log.info(
            "stack.ready",
            rest_base_url=f"http://127.0.0.1:{settings.http_port}",
            console_url=f"http://127.0.0.1:{settings.http_port}/",
            grpc_address=f"127.0.0.1:{settings.http_port}",
            queryd=str(settings.queryd_addr),
            queryd_replicas=settings.queryd_replicas,
            ingest_shards=settings.ingest_shards,
            billingd=str(settings.billingd_addr),
        )
        print(
            f"\nktape ready\n  console http://127.0.0.1:{settings.http_port}/ (sign up there)\n"
            f"  REST  http://127.0.0.1:{settings.http_port}/v1/markets\n"
            f"  gRPC  127.0.0.1:{settings.http_port} (via Envoy) or {settings.queryd_addr}\n"
            f"  health http://127.0.0.1:{settings.http_port}/healthz\n"
            + (f"  demo API key (shown once): {demo_key}\n" if demo_key else "")
            + "  Ctrl-C stops everything.\n",
            file=sys.stderr, flush=True,
        )

    announcer = asyncio.create_task(announce(), name="announce-ready")
    try:
        await supervisor.run(stop)
    except ChildFailed as exc:
        log.error("supervisor.start_failed", component=exc.name, returncode=exc.returncode,
                  last_output=exc.tail[-10:])
        return 1
    finally:
        announcer.cancel()
        state_path.unlink(missing_ok=True)
    return 0


async def _status(settings: Settings, *, as_json: bool) -> int:
    from ktape.status import collect_status

    report = await collect_status(settings)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for comp in report["components"]:
            mark = "ok  " if comp["healthy"] else "DOWN"
            supervised = (f" pid {comp['pid']} restarts {comp['restarts']}"
                          if comp.get("pid") else "")
            print(f"{mark} {comp['name']:<9} {comp['address']:<28} {comp['detail']}"
                  f"{supervised}")
            for key, value in (comp.get("data") or {}).items():
                print(f"       {key}: {value}")
    return 0 if all(c["healthy"] for c in report["components"]) else 1


if __name__ == "__main__":
    sys.exit(main())
