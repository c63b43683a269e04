"""How many REST calls a second does ktape serve through Envoy, with 1 and with 2 queryd
replicas, and where do they go?

Intent: issue 19 item 5. In one run, the whole stack (`ktape up --simulator`, loopback
ports and a data dir of its own) is started once per replica count; after a warm-up that
records some history, `--clients` concurrent REST clients (httpx, one connection each)
call Envoy for `--duration` seconds or `--max-calls` calls in all, whichever comes first,
on a fixed mix — the book at a past instant, a deltas page, a day of 1m candles, a
markets page (one of each in turn, markets and times drawn from a seeded RNG). Reported
per run: calls/s, p50/p99 per call type and overall, the count of 5xx (must be zero) and
of other non-2xx, and the CPU seconds each process (the clients' own included) used
during the load (what the machine spent where). Keys: `--keys` prod keys of one pro
account, used in turn, so the per-key rate limit never decides the result. Saves
bench/results/load_rest_mix.json.

Run: .venv/bin/python bench/load/rest_mix.py [--duration 60] [--clients 16]
     [--replicas 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import cpu_secs, percentiles, save
from billingd.store import BillingStore
from ktape.runtime.ports import free_base_port, free_port

KINDS = ("book_at", "deltas_page", "candles_day", "markets")


def stack_env(data_dir: Path, replicas: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTAPE_")}
    env.update(
        KTAPE_DATA_DIR=str(data_dir), KTAPE_HTTP_PORT=str(free_port()),
        KTAPE_QUERYD_ADDR=f"127.0.0.1:{free_base_port(replicas)}",
        KTAPE_QUERYD_METRICS_ADDR=f"127.0.0.1:{free_base_port(replicas)}",
        KTAPE_BILLINGD_ADDR=f"127.0.0.1:{free_port()}",
        KTAPE_QUESTDB_HTTP=f"127.0.0.1:{free_port()}", KTAPE_QUESTDB_PG=f"127.0.0.1:{free_port()}",
        KTAPE_INGESTD_METRICS_ADDR=f"127.0.0.1:{free_port()}",
        KTAPE_BILLINGD_METRICS_ADDR=f"127.0.0.1:{free_port()}",
        KTAPE_CONSOLE_ADDR=f"127.0.0.1:{free_port()}",
        KTAPE_DATASETD_ADDR=f"127.0.0.1:{free_port()}",
        KTAPE_ENVOY_ADMIN_PORT=str(free_port()), KTAPE_SIM_PORT=str(free_port()),
        KTAPE_LOG_FORMAT="json", KTAPE_LOG_LEVEL="WARNING")
    return env


def make_keys(data_dir: Path, count: int) -> list[str]:
    store = BillingStore.from_dsn(f"sqlite:///{(data_dir / 'billing.sqlite3').resolve()}")
    try:
        account = store.create_account("load-bench", plan="pro")
        store.append(account.account_id, 100_000_000, kind="grant", reason="load bench",
                     idempotency_key="load-bench")
        return [store.create_key(account.account_id, env="prod", name=f"load-{i}").full
                for i in range(count)]
    finally:
        store.close()


class Stack:
    """`ktape up --simulator --queryd-replicas N` as a child process group of this run."""

    def __init__(self, work: Path, replicas: int, markets: int) -> None:
        self.data_dir = work / f"replicas-{replicas}"
        self.data_dir.mkdir(parents=True)
        self.env = stack_env(self.data_dir, replicas)
        self.replicas = replicas
        self.markets = markets
        self.log = work / f"stack-{replicas}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.env['KTAPE_HTTP_PORT']}"

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ktape", "up", "--simulator", "--sim-markets",
                 str(self.markets), "--queryd-replicas", str(self.replicas)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def children(self) -> dict[str, int]:
        """Each supervised child's pid (the supervisor's state file)."""
        state = json.loads((self.data_dir / "stack.json").read_text())
        return {c["name"]: c["pid"] for c in state["children"] if c.get("pid")}

    async def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ktape up exited:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError):
                    ready = (await client.get(f"{self.base}/healthz")).status_code == 200
                    if ready and len([n for n in self.children() if n.startswith("queryd")]) \
                            == self.replicas and "ktape ready" in self.log.read_text():
                        return
                await asyncio.sleep(1)
        raise TimeoutError(f"stack not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        started = [json.loads(line)["pid"] for line in self.log.read_text().splitlines()
                   if line.startswith("{") and '"child.started"' in line]
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in started:  # children run in their own sessions
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def rfc3339(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def call_path(kind: str, rng: random.Random, tickers: list[str], began: dt.datetime,
              now: dt.datetime) -> str:
    ticker = rng.choice(tickers)
    at = began + (now - began) * rng.random()
    if kind == "book_at":
        return f"/v1/markets/{ticker}/orderbook?at={rfc3339(at)}"
    if kind == "deltas_page":
        return f"/v1/markets/{ticker}/deltas?start_time={rfc3339(began)}&page_size=100"
    if kind == "candles_day":
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return (f"/v1/markets/{ticker}/candles?start_time={rfc3339(day)}"
                f"&end_time={rfc3339(day + dt.timedelta(days=1))}&interval=1m")
    return "/v1/markets?page_size=100"


async def client_loop(base: str, keys: list[str], offset: int, seed: int, tickers: list[str],
                      began: dt.datetime, until: float, budget: list[int],
                      samples: dict[str, list[float]], statuses: dict[int, int],
                      errors: list[str]) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        i = offset
        while time.monotonic() < until and budget[0] > 0:
            budget[0] -= 1
            kind = KINDS[i % len(KINDS)]
            path = call_path(kind, rng, tickers, began, dt.datetime.now(dt.UTC))
            headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
            i += 1
            t0 = time.perf_counter()
            try:
                resp = await client.get(path, headers=headers)
                status, detail = resp.status_code, resp.text[:200]
            except httpx.HTTPError as exc:
                status, detail = 0, repr(exc)  # no answer at all: counted as non-2xx
            samples[kind].append((time.perf_counter() - t0) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200 and len(errors) < 20:
                errors.append(f"{status} {path}: {detail}")


async def one_run(work: Path, replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(work, replicas, args.markets)
    keys = make_keys(stack.data_dir, args.keys)
    stack.start()
    try:
        await stack.wait_ready()
        began = dt.datetime.now(dt.UTC)
        await asyncio.sleep(args.warmup)  # history to read
        async with httpx.AsyncClient(base_url=stack.base, timeout=10) as client:
            resp = await client.get("/v1/markets?page_size=100",
                                    headers={"Authorization": f"Bearer {keys[0]}"})
            resp.raise_for_status()
            tickers = [m["ticker"] for m in resp.json()["markets"]]
        pids = stack.children()
        cpu_before = {name: cpu_secs(pid) for name, pid in pids.items()}
        client_cpu = cpu_secs()  # this process: the clients themselves
        samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
        statuses: dict[int, int] = {}
        errors: list[str] = []
        budget = [args.max_calls]
        t0 = time.monotonic()
        until = t0 + args.duration
        await asyncio.gather(*(client_loop(stack.base, keys, i, args.seed + i, tickers, began,
                                           until, budget, samples, statuses, errors)
                               for i in range(args.clients)))
        elapsed = time.monotonic() - t0
        cpu = {name: round(cpu_secs(pid) - cpu_before[name], 2) for name, pid in pids.items()
               if Path(f"/proc/{pid}").exists()}
        cpu["bench_clients"] = round(cpu_secs() - client_cpu, 2)
        calls = sum(len(v) for v in samples.values())
        return {
            "queryd_replicas": replicas, "clients": args.clients, "elapsed_secs": round(elapsed, 2),
            "calls": calls, "calls_per_sec": round(calls / elapsed, 1),
            "overall": percentiles([x for v in samples.values() for x in v]),
            "by_call": {kind: percentiles(v) for kind, v in samples.items()},
            "status_5xx": sum(n for s, n in statuses.items() if s >= 500),
            "status_other_non_2xx": sum(n for s, n in statuses.items() if s < 200 or 300 <= s < 500),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "cpu_secs_during_load": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
            "first_errors": errors[:5],
        }
    finally:
        stack.stop()


async def amain(args: argparse.Namespace) -> int:
    runs = []
    with tempfile.TemporaryDirectory(prefix="ktape-load-") as tmp:
        for replicas in [int(r) for r in args.replicas.split(",")]:
            runs.append(await one_run(Path(tmp), replicas, args))
            print(json.dumps(runs[-1]), flush=True)
    save("load_rest_mix", {
        "note": "loopback only; the machine (2 cores) was shared with other work while "
                "measured; client, Envoy, queryd, billingd, QuestDB, the simulator and "
                "ingestd all on the same cores",
        "params": {"duration_secs": args.duration, "max_calls": args.max_calls,
                   "clients": args.clients, "keys": args.keys, "markets": args.markets,
                   "warmup_secs": args.warmup, "seed": args.seed, "mix": list(KINDS)},
        "runs": runs})
    return 1 if any(r["status_5xx"] for r in runs) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per run")
    parser.add_argument("--max-calls", type=int, default=200_000, help="calls per run at most")
    parser.add_argument("--clients", type=int, default=16, help="concurrent REST clients")
    parser.add_argument("--keys", type=int, default=64, help="API keys used in turn")
    parser.add_argument("--markets", type=int, default=50, help="simulated markets")
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="seconds of recording before the load")
    parser.add_argument("--replicas", default="1,2", help="queryd replica counts, in order")
    parser.add_argument("--seed", type=int, default=7)
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
