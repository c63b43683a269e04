"""ktape-client as a user gets it: `pip install ./clients/python` into a clean venv (no
ktape beside it), then every kind of call against the live edge on recorded data."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from ktape.runtime.pins import REPO_ROOT
from ktape.sim.server import SimConfig
from tests.fixtures.recording import recorded_simulator


def test_the_package_holds_its_own_stubs_and_imports_without_ktape(client_python):
    probe = subprocess.run(
        [str(client_python), "-c", "import sys, ktape_client; "
         "print(ktape_client.__file__); print('ktape' in sys.modules)"],
        capture_output=True, text=True, check=True, cwd="/")
    where, ktape_loaded = probe.stdout.split()
    assert "site-packages" in where and ktape_loaded == "False"


async def test_every_kind_of_call_against_recorded_data(client_python, client_env, edge, questdb,
                                                       tmp_path):
    config = SimConfig(markets=4, rate=200, seed=31)
    async with recorded_simulator(questdb, tmp_path, config) as (recorder, sim):
        sim.model.lifecycle_rate = 0  # no market closes (its book would empty) mid-check
        await asyncio.sleep(4)
        ticker = max(recorder.feed.books, key=lambda t: recorder.feed.books[t].last_seq)
        proc = await asyncio.create_subprocess_exec(
            str(client_python), str(Path(__file__).with_name("client_checks.py")),
            f"127.0.0.1:{edge.http_port}", ticker, cwd="/",
            env=client_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    found = json.loads(out.decode().splitlines()[-1])
    assert "site-packages" in found["module"]
    assert found["repr_hides_key"]
    assert found["book"]["decimal"] and found["book"]["implied_ask_ok"]
    assert found["book"]["continuity"] == "CONTINUOUS" and found["book"]["levels"] > 0
    paging = found["paging"]
    # every change exactly once whatever the page size; an omitted end stays fixed across pages
    assert paging["small"] == paging["unique"] == paging["big"] > 7 and paging["same"]
    assert paging["open_end"] == paging["open_unique"] >= paging["big"]
    frame = found["frame"]
    assert frame["rows"] >= paging["big"]
    assert not [c for c, t in frame["dtypes"].items() if t.startswith("float")], frame
    assert frame["dtypes"]["ts"].startswith("datetime64") and frame["price_type"] == "Decimal"
    assert frame["equals_messages"], frame["first_difference"]
    # every delta labelled (snapshot levels are not): the server's causes reach both forms
    assert "new" in frame["causes"] and set(frame["causes"]) <= {"new", "cancel", "trade",
                                                                 "unspecified"}, frame
    assert frame["delta_causes"] and "DELTA_CAUSE_UNSPECIFIED" not in frame["delta_causes"], frame
    # the book after every change, rebuilt by the client, ends on the stored book
    assert found["replay"]["steps"] == paging["big"]
    assert found["replay"]["equals_book"], found["replay"]
    assert found["markets"] >= 4  # the sim's, and any a new listing added
    assert "yes_price" in found["trades_df_cols"]
    assert found["errors"] == {"not_found": "UNKNOWN_TICKER", "invalid_field": "interval"}
    assert found["stream"][0] == "Book" and set(found["stream"][1:]) == {"Change"}
    assert found["no_key"] == "API_KEY_MISSING"
    assert found["billing"] == {
        "usage_columns": ["day", "method", "calls", "credits"], "usage_calls_dtype": "int64",
        "secret_hidden": True, "secret_env": "dev", "new_key_works": True, "listed": True,
        "listed_env": "dev", "revoked": True, "packs": found["billing"]["packs"],
        "checkout_url": True}
    assert found["billing"]["packs"] > 0
    assert found["async_book_levels"] > 0 and found["async_deltas"] >= paging["big"]


def test_it_builds_without_the_server_package_importable():
    """The build reads the protos from the repository, nothing from ktape's Python."""
    assert (REPO_ROOT / "clients" / "python" / "setup.py").exists()
    assert sys.version_info >= (3, 11)
