"""Download throughput of a dataset file: through Envoy on the shared port, straight from
datasetd, and a plain local read of the same file, side by side in one run.

Intent: the file route must not be the bottleneck of a download (the network is); this
shows what Envoy and datasetd cost over reading the bytes from disk. A random file (no
compression effects) is published with its manifest; each path is read whole, `--repeats`
times, and the median MB/s reported. Saves bench/results/datasets_download.json.

Run: .venv/bin/python bench/datasets/download.py [--mb 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import save, spawn_envoy, stop, wait_for_http
from ktape.config import load_settings
from ktape.datasets.manifest import DayManifest, FileEntry
from ktape.datasets.names import FileName, manifest_name
from ktape.datasets.signing import expiry, signed_path, signing_key
from ktape.datasets.storage import LocalStorage
from ktape.runtime.pins import REPO_ROOT
from ktape.runtime.ports import free_port

NAME = "book_changes/2026-11-02/series/KXBENCH.parquet"
SECRET = "bench-download-signing-key"


def publish(data_dir: Path, size: int) -> None:
    store = LocalStorage(data_dir / "datasets")
    local = store.scratch_dir() / "f.part"
    digest = hashlib.sha256()
    with open(local, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    store.publish(local, NAME)
    parsed = FileName.parse(NAME)
    manifest = DayManifest(dt.date(2026, 11, 2), closed=True)
    manifest.put(FileEntry(name=NAME, data_type=parsed.data_type, date="2026-11-02", ticker="",
                           series_ticker="KXBENCH", format="parquet", bytes=size, rows=1,
                           sha256=digest.hexdigest(), first_ts_us=1, last_ts_us=2,
                           condition="AVAILABLE", last_modified_us=1, source="bench"))
    store.write_bytes(manifest_name(dt.date(2026, 11, 2)), manifest.to_bytes())


def read_url(url: str) -> float:
    """MB/s of a whole download by curl (a C client, so the client is not what is
    measured), bytes to /dev/null."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{speed_download}",
                          url], capture_output=True, text=True, timeout=300, check=True).stdout
    code, speed = out.split()
    assert code == "200", code
    return float(speed) / 1e6


def read_file(path: Path) -> float:
    began, got = time.perf_counter(), 0
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            got += len(chunk)
    return got / (time.perf_counter() - began) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ktape-bench-dl-"))
    data_dir = work / "data"
    publish(data_dir, args.mb << 20)
    datasetd_addr = f"127.0.0.1:{free_port()}"
    closed = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTAPE_")}
    env.update(KTAPE_DATA_DIR=str(data_dir), KTAPE_DATASETD_ADDR=datasetd_addr,
               KTAPE_DATASETS_SIGNING_KEY=SECRET, KTAPE_QUESTDB_HTTP=closed,
               KTAPE_QUESTDB_PG=closed, KTAPE_LOG_LEVEL="ERROR")
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "datasetd"], env=env, cwd=REPO_ROOT,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, text=True))
        envoy, http_port = spawn_envoy(work, datasetd_addr=datasetd_addr)
        procs.append(envoy)
        wait_for_http(f"http://{datasetd_addr}/livez", 200)
        wait_for_http(f"http://127.0.0.1:{http_port}/v1/files/{NAME}", 403)
        key = signing_key(load_settings({"KTAPE_DATA_DIR": str(data_dir),
                                         "KTAPE_DATASETS_SIGNING_KEY": SECRET}))
        path = signed_path(key, NAME, expiry(time.time()))
        runs: dict[str, list[float]] = {"local_file": [], "datasetd": [], "envoy": []}
        for _ in range(args.repeats):  # interleaved: each path sees the same machine
            runs["local_file"].append(read_file(data_dir / "datasets" / NAME))
            runs["datasetd"].append(read_url(f"http://{datasetd_addr}{path}"))
            runs["envoy"].append(read_url(f"http://127.0.0.1:{http_port}{path}"))
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)  # the published file is --mb large
    result = {"file_mb": args.mb, "repeats": args.repeats,
              **{f"{k}_mb_s": round(statistics.median(v), 1) for k, v in runs.items()},
              "runs_mb_s": {k: [round(x, 1) for x in v] for k, v in runs.items()}}
    result["envoy_over_local"] = round(result["envoy_mb_s"] / result["local_file_mb_s"], 3)
    print(result)
    save("datasets_download", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
