"""Dataset downloads through the real Envoy on the shared port, from the real datasetd
process (`python -m datasetd`): Range, If-None-Match and If-Range reach datasetd, and
ETag, Repr-Digest, Content-Range and the error bodies come back unchanged; the body is
streamed, not transcoded; datasetd's metrics are at /metrics/datasetd.

Only datasetd and Envoy run here (the other clusters point at closed ports), so this
needs no QuestDB; both are stopped by PID.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ktape.config import load_settings
from ktape.datasets.manifest import DayManifest, FileEntry
from ktape.datasets.names import FileName, manifest_name
from ktape.datasets.signing import expiry, signed_path, signing_key
from ktape.datasets.storage import LocalStorage
from ktape.envoy import envoy_binary, render_envoy_config
from ktape.runtime.pins import REPO_ROOT
from ktape.runtime.ports import free_port

pytestmark = pytest.mark.integration

SIGNING_SECRET = "through-envoy-test-signing-key"
NAME = "book_changes/2026-12-01/KXENVOY-26DEC01-A.parquet"
DATA = os.urandom((6 << 20) + 777)  # several read chunks and Envoy buffers


@dataclass
class Stack:
    base_url: str
    key: bytes
    work: Path

    def url(self, name: str = NAME) -> str:
        return self.base_url + signed_path(self.key, name, expiry(time.time()))


def _publish(data_dir: Path) -> None:
    store = LocalStorage(data_dir / "datasets")
    local = store.scratch_dir() / "f.part"
    local.write_bytes(DATA)
    store.publish(local, NAME)
    parsed = FileName.parse(NAME)
    manifest = DayManifest(dt.date(2026, 12, 1), closed=True)
    manifest.put(FileEntry(name=NAME, data_type=parsed.data_type, date="2026-12-01",
                           ticker=parsed.ticker, series_ticker="KXENVOY", format="parquet",
                           bytes=len(DATA), rows=1, sha256=hashlib.sha256(DATA).hexdigest(),
                           first_ts_us=1, last_ts_us=2, condition="AVAILABLE",
                           last_modified_us=1_764_640_000_000_000, source="fp"))
    store.write_bytes(manifest_name(dt.date(2026, 12, 1)), manifest.to_bytes())


def _wait_for(url: str, procs: dict[str, subprocess.Popen[bytes]], work: Path,
              ok: tuple[int, ...] = (200,), timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n"
                                   f"{(work / f'{name}.log').read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not answering in {timeout}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("files-envoy")
    data_dir = work / "data"
    _publish(data_dir)
    datasetd_addr = f"127.0.0.1:{free_port()}"
    http_port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTAPE_")}
    env.update(KTAPE_DATA_DIR=str(data_dir), KTAPE_DATASETD_ADDR=datasetd_addr,
               KTAPE_DATASETS_SIGNING_KEY=SIGNING_SECRET, KTAPE_LOG_FORMAT="json")
    config = work / "envoy.yaml"
    closed = f"127.0.0.1:{free_port()}"  # every other backend: nothing listens
    config.write_text(render_envoy_config(
        http_port=http_port, admin_port=admin_port, queryd_addr=closed, billingd_addr=closed,
        descriptor_path=REPO_ROOT / "build" / "api.pb", access_log_path=str(work / "access.log"),
        queryd_metrics_addr=closed, billingd_metrics_addr=closed, ingestd_metrics_addr=closed,
        console_addr=closed, datasetd_addr=datasetd_addr))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in (("datasetd", [sys.executable, "-m", "datasetd"]),
                           ("envoy", [str(envoy_binary()), "-c", str(config),
                                      "--disable-hot-restart", "--log-level", "warn"])):
            with open(work / f"{name}.log", "wb") as out:
                procs[name] = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
        _wait_for(f"http://{datasetd_addr}/livez", procs, work)
        # Through Envoy: an unsigned request is datasetd's own 403 once the route is live.
        _wait_for(f"http://127.0.0.1:{http_port}/v1/files/{NAME}", procs, work, ok=(403,))
        key = signing_key(load_settings({"KTAPE_DATA_DIR": str(data_dir),
                                         "KTAPE_DATASETS_SIGNING_KEY": SIGNING_SECRET}))
        yield Stack(f"http://127.0.0.1:{http_port}", key, work)
    finally:
        for proc in reversed(list(procs.values())):
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


ETAG = f'"{hashlib.sha256(DATA).hexdigest()}"'
REPR_DIGEST = f"sha-256=:{base64.b64encode(hashlib.sha256(DATA).digest()).decode()}:"


def test_whole_file_streams_through_with_its_validators(stack):
    resp = httpx.get(stack.url(), timeout=30)
    assert resp.status_code == 200
    assert hashlib.sha256(resp.content).hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert resp.headers["content-length"] == str(len(DATA))
    assert resp.headers["etag"] == ETAG
    assert resp.headers["repr-digest"] == REPR_DIGEST
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["content-type"] == "application/vnd.apache.parquet"
    assert "content-encoding" not in resp.headers and "grpc-status" not in resp.headers


def test_range_reaches_datasetd_and_content_range_comes_back(stack):
    size = len(DATA)
    cases = (("bytes=100-199", 100, 200), (f"bytes={size - 10}-", size - 10, size),
             ("bytes=-1000", size - 1000, size))
    for header, start, end in cases:
        resp = httpx.get(stack.url(), headers={"Range": header}, timeout=30)
        assert resp.status_code == 206, header
        assert resp.content == DATA[start:end]
        assert resp.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
        assert resp.headers["etag"] == ETAG and resp.headers["repr-digest"] == REPR_DIGEST


def test_resume_after_a_cut_through_envoy_gives_the_same_sha256(stack):
    got = bytearray()
    with httpx.Client(timeout=30) as client, client.stream("GET", stack.url()) as resp:
        for chunk in resp.iter_raw():
            got += chunk
            if len(got) >= 1 << 20:
                break
    rest = httpx.get(stack.url(), headers={"Range": f"bytes={len(got)}-", "If-Range": ETAG},
                     timeout=30)
    assert 0 < len(got) < len(DATA) and rest.status_code == 206
    joined = hashlib.sha256(bytes(got) + rest.content).digest()
    assert rest.headers["repr-digest"] == f"sha-256=:{base64.b64encode(joined).decode()}:"


def test_if_none_match_is_304_through_envoy(stack):
    resp = httpx.get(stack.url(), headers={"If-None-Match": ETAG}, timeout=30)
    assert resp.status_code == 304 and resp.content == b""
    assert resp.headers["etag"] == ETAG and resp.headers["repr-digest"] == REPR_DIGEST


def test_head_416_and_refusals_keep_datasetd_answers(stack):
    head = httpx.head(stack.url(), timeout=30)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(DATA))
    past = httpx.get(stack.url(), headers={"Range": f"bytes={len(DATA)}-"}, timeout=30)
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(DATA)}"
    forged = httpx.get(stack.url().replace("KXENVOY-26DEC01-A", "KXENVOY-26DEC01-B"), timeout=30)
    assert forged.status_code == 403
    info = forged.json()["details"][0]
    # datasetd's own error (domain ktape.dev), not an Envoy local reply (envoy.ktape.dev).
    assert (info["domain"], info["reason"]) == ("ktape.dev", "DOWNLOAD_URL_INVALID")
    missing = httpx.get(stack.url("trades/2026-12-01/KXNONE.parquet"), timeout=30)
    assert missing.status_code == 404
    assert missing.json()["details"][0]["reason"] == "DATASET_FILE_NOT_FOUND"


def test_cors_exposes_the_download_headers(stack):
    resp = httpx.get(stack.url(), headers={"Origin": "https://app.example", "Range": "bytes=0-0"},
                     timeout=30)
    assert resp.status_code == 206
    exposed = {h.strip() for h in resp.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "repr-digest", "content-range"} <= exposed


def test_datasetd_metrics_through_envoy(stack):
    assert httpx.get(stack.url(), headers={"Range": "bytes=0-9"}, timeout=30).status_code == 206
    text = httpx.get(f"{stack.base_url}/metrics/datasetd", timeout=10).text
    assert "datasetd_file_sent_bytes_total" in text
    assert 'datasetd_file_requests_total{method="GET",status="206"}' in text
