"""client.datasets and `ktape-data download` as a user gets them (the clean client venv)
against the live edge, on files built from a recording of the simulator: a listing as a
DataFrame, the cost, a download cut halfway and resumed with Range to the right SHA-256,
a file already there not fetched again, a wrong SHA-256 an error naming the file."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from ktape.sim.server import SimConfig
from tests.fixtures.datasets import build_todays_files


@pytest.fixture
async def files(edge, clean_questdb, tmp_path):
    """Today's files so far, built into the edge's own dataset store (as the datasets job
    builds them), and a ticker that has some."""
    _storage, ticker = await build_todays_files(edge, clean_questdb, tmp_path,
                                                SimConfig(markets=2, rate=300, seed=17))
    return ticker


async def _run(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd="/", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, (out.decode()[-2000:], err.decode()[-3000:])
    return out.decode(), err.decode()


async def test_download_resumes_a_cut_and_checks_every_byte(client_python, client_env, edge,
                                                           files, tmp_path):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    out, err = await _run([str(client_python), str(Path(__file__).with_name("download_checks.py")),
                           edge.grpc_addr, files, today, str(tmp_path / "dest")], client_env)
    found = json.loads(out.splitlines()[-1])
    size, sha = found["file"]["bytes"], found["file"]["sha256"]
    name = found["file"]["name"]
    assert name == f"book_changes/{today}/{files}.parquet" and size > 1000

    listing = found["listing"]
    assert listing["rows"] == found["cost"]["file_count"] == 10  # 5 data types x 2 formats
    assert listing["credits"] == found["cost"]["credits"] > 0
    assert listing["dtypes"]["bytes"] == "int64"
    assert listing["dtypes"]["last_modified_time"].startswith("datetime64")

    cut = found["cut"]
    assert cut["raised"] == "DownloadError" and cut["names_file"], cut
    assert cut["reason"] == "TRANSFER_CUT" and not cut["final_exists"]
    assert cut["part_bytes"] == size // 2

    resume = found["resume"]
    assert resume["status"] == "resumed" and resume["fetched"] == size - size // 2
    assert resume["requests"] == [{"name": name, "range": f"bytes={size // 2}-",
                                   "if_range": f'"{sha}"'}]
    assert resume["sha256"] == sha and not resume["part_left"]
    assert "1/1 files" in err  # the plain progress line (no tqdm in this venv)

    assert found["again"] == {"status": ["present"], "requests": 0, "charged": 0}

    within = found["within"]
    assert within["status"] == ["downloaded"] and within["sha256"] == sha
    assert [r["range"] for r in within["requests"]] == [None, f"bytes={size // 2}-"]

    corrupt = found["corrupt"]
    assert corrupt["raised"] == "ChecksumMismatchError" and corrupt["name"] == name
    assert corrupt["in_message"] and corrupt["expected"] == sha
    assert not corrupt["final_exists"] and not corrupt["part_exists"]
    assert found["named"] == ["downloaded"]
    assert found["async"] == {"listed": [name], "cost_files": 1, "status": ["present"],
                              "charged": 0}


async def test_ktape_data_download_prints_what_it_bought(client_python, client_env, edge, files,
                                                        tmp_path):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    series = files.split("-")[0]
    dest = tmp_path / "series"
    cli = str(client_python.parent / "ktape-data")
    argv = [cli, "--target", edge.grpc_addr, "download", "--type", "book_changes",
            "--series", series, "--from", today, "--to", today, "--dest", str(dest), "--quiet"]
    out, _ = await _run(argv, client_env)
    print(" ".join(argv[1:]), out, sep="\n")  # shown on failure; docs/client.md quotes it
    lines = out.splitlines()
    assert lines[0].endswith("credits (files bought before cost nothing)"), out
    files_line = [line for line in lines if line.split() and line.split()[0] == "downloaded"]
    paths = [Path(line.split()[-1]) for line in files_line]
    assert any(p.name == f"{series}.parquet" and p.parent.name == "series" for p in paths)
    assert any(p.name == f"{files}.parquet" for p in paths)
    for line, path in zip(files_line, paths, strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(line.split()[1])
        assert path.is_relative_to(dest)
    assert lines[-1] == f"files are in {dest.resolve()}"
    assert f"bought {len(paths)} files" in out

    again, _ = await _run(argv, client_env)  # nothing bought or fetched the second time
    assert f"bought 0 files for 0 credits, fetched 0 B; {len(paths)} already in" in again
