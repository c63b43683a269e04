"""Shared bench helpers: result files with commit and machine, percentiles."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

# KTAPE_BENCH_RESULTS_DIR: where results go instead (the smoke test keeps real ones).
RESULTS_DIR = Path(os.environ.get("KTAPE_BENCH_RESULTS_DIR")
                   or Path(__file__).resolve().parent / "results")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def cpu_secs(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) used so far by `pid`, or by this process."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {"n": len(ordered), "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": round(ordered[-1], 3), "mean_ms": round(statistics.fmean(ordered), 3)}


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"bench": name, "commit": commit(), "machine": machine(),
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return path


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """A bench's server process: stdout piped (for `json_line`), stderr to `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=out, text=True,
                                stdin=subprocess.DEVNULL)


def json_line(proc: subprocess.Popen[str], key: str) -> dict:
    """The first line of `proc`'s stdout holding `key`, as JSON (its ready line)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if key in line:
            return json.loads(line)
    raise RuntimeError(f"process exited before printing {key}")


def stop(procs: list[subprocess.Popen[str]]) -> None:
    """Stop a bench's processes by their pids, last started first: SIGTERM, then a kill
    after 15 s."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def spawn_envoy(root: Path, *, queryd_addr: str | None = None,
                datasetd_addr: str | None = None) -> tuple[subprocess.Popen[str], int]:
    """Envoy on a free port in front of the services a bench runs, and that port.

    Every address it is not given points at one closed port, so a route the bench does not
    serve fails at once instead of reaching a service someone else runs on a default port.
    """
    from ktape.envoy import envoy_binary, render_envoy_config
    from ktape.runtime.pins import REPO_ROOT
    from ktape.runtime.ports import free_port

    closed = f"127.0.0.1:{free_port()}"
    http_port = free_port()
    config = root / "envoy.yaml"
    config.write_text(render_envoy_config(
        http_port=http_port, admin_port=free_port(), queryd_addr=queryd_addr or closed,
        billingd_addr=closed, descriptor_path=REPO_ROOT / "build" / "api.pb",
        queryd_metrics_addr=closed, billingd_metrics_addr=closed, ingestd_metrics_addr=closed,
        console_addr=closed, datasetd_addr=datasetd_addr or closed))
    proc = spawn([str(envoy_binary()), "-c", str(config), "--disable-hot-restart",
                  "--log-level", "error"], dict(os.environ), root / "envoy.log")
    return proc, http_port


def wait_for_http(url: str, status: int, timeout: float = 60) -> None:
    """Until `url` answers `status` (a server a bench started is ready)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)
