"""consoled: every page path answers index.html (never cached), hashed assets a year of
caching, security headers everywhere, nothing outside the build served."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from consoled.app import CSP, make_app


@pytest.fixture
async def client(tmp_path: Path):
    build = tmp_path / "console"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text('<div id="app"></div>')
    (build / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not for the web")
    async with TestClient(TestServer(make_app(build))) as test_client:
        yield test_client


async def test_pages_are_the_app_and_never_cached(client):
    for path in ("/", "/keys", "/billing/success", "/reset?token=x"):
        response = await client.get(path)
        assert response.status == 200
        assert await response.text() == '<div id="app"></div>'
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Frame-Options"] == "DENY"


async def test_assets_are_immutable_and_missing_or_escaping_ones_are_404(client):
    asset = await client.get("/assets/index-abc123.js")
    assert asset.status == 200 and "immutable" in asset.headers["Cache-Control"]
    assert "javascript" in asset.headers["Content-Type"]
    assert (await client.get("/assets/nope.js")).status == 404
    for escape in ("/assets/../../secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt",
                   "/../secret.txt"):
        assert "not for the web" not in await (await client.get(escape)).text()


def test_a_missing_build_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="make console"):
        make_app(tmp_path / "nothing")


def test_no_inline_script_is_allowed():
    script = CSP.split("script-src")[1].split(";")[0]
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script
