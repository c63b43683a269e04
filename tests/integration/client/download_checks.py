"""Run by tests/integration/client/test_datasets.py in the clean client venv: list, price and
download dataset files through a cutting HTTP proxy, then print one JSON object of findings.
Arguments: TARGET TICKER DAY DEST.

The proxy (standard library only, in a thread of this process) sits between the client's
file fetches and Envoy, installed as urllib's proxy (gRPC calls do not pass through it).
It records every request's Range and If-Range and, by mode, passes the file through, cuts
every answer after half the body (`cut`), cuts only the first answer for each file
(`cut_first`), or flips one byte of the body (`corrupt`).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import http.server
import json
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from ktape_client import AsyncClient, ChecksumMismatchError, Client, DownloadError

target, ticker, day, dest = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class CuttingProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "pass"
        self.seen: list[dict] = []
        self.lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    server: CuttingProxy

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)  # a proxy gets the absolute URL
        name = url.path.removeprefix("/v1/files/")
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "if-range")}
        with self.server.lock:
            first = not any(s["name"] == name for s in self.server.seen)
            self.server.seen.append({"name": name, "range": headers.get("Range"),
                                     "if_range": headers.get("If-Range")})
            mode = self.server.mode
        upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
        upstream.request("GET", f"{url.path}?{url.query}", headers=headers)
        answer = upstream.getresponse()
        body = answer.read()
        upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if mode == "cut" or (mode == "cut_first" and first):
            body = body[:len(body) // 2]  # Content-Length still promises the whole body
        elif mode == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


proxy = CuttingProxy()
threading.Thread(target=proxy.serve_forever, daemon=True).start()
urllib.request.install_opener(urllib.request.build_opener(
    urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy.server_address[1]}"})))
out: dict = {}
one = {"data_type": "book_changes", "ticker": ticker, "start_date": day, "format": "parquet"}

with Client(target=target) as client:
    listed = client.datasets.list(start_date=day, ticker=ticker).to_df()
    out["listing"] = {"rows": len(listed), "dtypes": {c: str(t) for c, t in listed.dtypes.items()},
                      "credits": int(listed["credits"].sum())}
    out["cost"] = vars(client.datasets.cost(start_date=day, ticker=ticker))
    (file,) = list(client.datasets.list(**one))
    out["file"] = {"name": file.name, "bytes": file.bytes, "sha256": file.sha256}
    final = dest / file.name
    part = final.with_name(f".{final.name}.part")

    # 1. cut halfway, no retries left: an error naming the file, the half kept as .part
    proxy.mode = "cut"
    with Client(target=target, retries=0) as impatient:
        try:
            impatient.datasets.download(dest_dir=dest, progress=False, **one)
            out["cut"] = {"raised": None}
        except DownloadError as exc:
            out["cut"] = {"raised": type(exc).__name__, "names_file": exc.name == file.name
                          and file.name in str(exc), "reason": exc.reason,
                          "part_bytes": part.stat().st_size if part.exists() else None,
                          "final_exists": final.exists()}

    # 2. called again: resumed from the half with Range + If-Range, right SHA-256
    proxy.mode, proxy.seen = "pass", []
    resumed = client.datasets.download(dest_dir=dest, progress=True, **one)
    (result,) = resumed.files
    out["resume"] = {"status": result.status, "fetched": result.fetched_bytes,
                     "requests": list(proxy.seen), "sha256": hashlib.sha256(final.read_bytes()).hexdigest(),
                     "part_left": part.exists(), "charged": resumed.charged_credits}

    # 3. called again: present with the right SHA-256, nothing fetched, nothing charged
    proxy.seen = []
    again = client.datasets.download(dest_dir=dest, progress=False, **one)
    out["again"] = {"status": [f.status for f in again.files], "requests": len(proxy.seen),
                    "charged": again.charged_credits}

    # 4. a cut within one call is resumed by the call itself
    final.unlink()
    proxy.mode, proxy.seen = "cut_first", []
    within = client.datasets.download(dest_dir=dest, progress=False, **one)
    out["within"] = {"status": [f.status for f in within.files], "requests": list(proxy.seen),
                     "sha256": hashlib.sha256(final.read_bytes()).hexdigest()}

    # 5. a body that is not the file bought: an error naming the file, nothing in place
    final.unlink()
    proxy.mode = "corrupt"
    try:
        client.datasets.download(dest_dir=dest, progress=False, **one)
        out["corrupt"] = {"raised": None}
    except ChecksumMismatchError as exc:
        out["corrupt"] = {"raised": type(exc).__name__, "name": exc.name,
                          "in_message": file.name in str(exc), "expected": exc.expected,
                          "final_exists": final.exists(), "part_exists": part.exists()}

    # 6. by name
    proxy.mode = "pass"
    named = client.datasets.download([file.name], dest, progress=False)
    out["named"] = [f.status for f in named.files]


async def the_async_client() -> dict:
    """The same namespace on AsyncClient (the implementation Client wraps)."""
    async with AsyncClient(target=target) as client:
        listed = [f.name async for f in client.datasets.list(**one)]
        cost = await client.datasets.cost(listed)
        got = await client.datasets.download(dest_dir=dest, progress=False, **one)
        return {"listed": listed, "cost_files": cost.file_count,
                "status": [f.status for f in got.files], "charged": got.charged_credits}


out["async"] = asyncio.run(the_async_client())
proxy.shutdown()
print(json.dumps(out))
