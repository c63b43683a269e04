"""The dataset store, the same checks against both backends: a local directory and a real
S3-compatible server (moto's) reached through boto3. Published files read back byte for
byte, whole and by range, in bounded chunks; a republish replaces; missing objects are
None; listing treats a prefix as a directory; names outside the store are refused."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ktape.config import load_settings
from ktape.datasets.storage import CHUNK, LocalStorage, S3Storage, Storage, open_storage

NAME = "trades/2026-12-01/KXA-1.parquet"


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Iterator[Storage]:
    if request.param == "local":
        yield open_storage(load_settings({"KTAPE_DATA_DIR": str(tmp_path / "data")}))
        return
    server = request.getfixturevalue("s3_server")
    request.getfixturevalue("s3_env")
    bucket = server.new_bucket()
    yield open_storage(load_settings({
        "KTAPE_DATA_DIR": str(tmp_path / "data"), "KTAPE_DATASETS_URL": f"s3://{bucket}/prod/ds",
        "KTAPE_S3_ENDPOINT_URL": server.endpoint_url}))


def _built(storage: Storage, data: bytes, label: str = "x") -> Path:
    """A finished file in the store's scratch directory, as the build job leaves it."""
    local = storage.scratch_dir() / f"{label}.part"
    local.write_bytes(data)
    return local


def test_open_storage_picks_the_backend(tmp_path, s3_env):
    local = open_storage(load_settings({"KTAPE_DATA_DIR": str(tmp_path)}))
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "datasets").resolve()
    there = open_storage(load_settings({"KTAPE_DATA_DIR": str(tmp_path),
                                        "KTAPE_DATASETS_URL": f"file://{tmp_path}/elsewhere"}))
    assert isinstance(there, LocalStorage) and there.root == (tmp_path / "elsewhere").resolve()
    s3 = open_storage(load_settings({"KTAPE_DATA_DIR": str(tmp_path),
                                     "KTAPE_DATASETS_URL": "s3://ktape-data/a/b",
                                     "KTAPE_S3_ENDPOINT_URL": "http://127.0.0.1:1"}))
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("ktape-data", "a/b")
    assert s3.client.meta.endpoint_url == "http://127.0.0.1:1"
    # Scratch is local disk under the data dir (not /tmp, which may be memory).
    assert s3.scratch_dir().parent == tmp_path / "datasets-scratch"


def test_publish_then_read_back(storage):
    data = os.urandom(3 * CHUNK + 12345)
    local = _built(storage, data)
    storage.publish(local, NAME)
    assert not local.exists()  # moved or uploaded: scratch holds nothing afterwards
    found = storage.stat(NAME)
    assert found is not None and found.size == len(data) and found.mtime_us > 0
    chunks = list(storage.read_range(NAME, 0, len(data)))
    assert b"".join(chunks) == data
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= CHUNK  # bounded memory
    assert storage.read_bytes(NAME) == data


@pytest.mark.parametrize(("start", "end"), [(0, 1), (5, 6), (1000, CHUNK + 7), (CHUNK, 2 * CHUNK),
                                            (2 * CHUNK - 3, 2 * CHUNK + 100), (17, 17)])
def test_read_range_is_exactly_those_bytes(storage, start, end):
    data = os.urandom(2 * CHUNK + 100)
    storage.publish(_built(storage, data), NAME)
    assert b"".join(storage.read_range(NAME, start, end)) == data[start:end]


def test_republish_replaces(storage):
    storage.publish(_built(storage, b"first version"), NAME)
    storage.publish(_built(storage, b"second, longer version"), NAME)
    assert storage.read_bytes(NAME) == b"second, longer version"
    assert storage.stat(NAME).size == len(b"second, longer version")


def test_a_same_size_rewrite_changes_the_stat(storage):
    """What a cache compares: a manifest rewritten within the same second (S3 mtimes are
    whole seconds) and with the same length must still look changed."""
    storage.write_bytes("manifests/2026-12-01.json", b'{"v": 1}')
    before = storage.stat("manifests/2026-12-01.json")
    storage.write_bytes("manifests/2026-12-01.json", b'{"v": 2}')
    after = storage.stat("manifests/2026-12-01.json")
    assert before.size == after.size and before != after
    assert storage.stat("manifests/2026-12-01.json") == after  # stable while unchanged


def test_missing_objects_are_none(storage):
    assert storage.read_bytes("manifests/2026-12-01.json") is None
    assert storage.stat(NAME) is None
    assert storage.list("manifests") == []


def test_write_bytes_and_list_by_directory(storage):
    storage.write_bytes("manifests/2026-12-01.json", b'{"a": 1}')
    storage.write_bytes("manifests/2026-12-02.json", b'{"b": 2}')
    storage.write_bytes("manifests-old/2026-11-30.json", b"{}")
    storage.publish(_built(storage, b"t"), NAME)
    storage.publish(_built(storage, b"q"), "quotes/2026-12-01/series/KXA.csv.gz")
    _built(storage, b"unpublished")  # scratch is never listed
    assert storage.read_bytes("manifests/2026-12-02.json") == b'{"b": 2}'
    assert storage.list("manifests") == ["manifests/2026-12-01.json", "manifests/2026-12-02.json"]
    assert storage.list("manifests/") == storage.list("manifests")
    assert storage.list("quotes/2026-12-01") == ["quotes/2026-12-01/series/KXA.csv.gz"]
    assert storage.list("") == sorted(["manifests-old/2026-11-30.json", "manifests/2026-12-01.json",
                                       "manifests/2026-12-02.json", NAME,
                                       "quotes/2026-12-01/series/KXA.csv.gz"])


@pytest.mark.parametrize("bad", ["../outside.json", "/etc/passwd", "trades/../../x", "a//b"])
def test_names_outside_the_store_are_refused(storage, bad):
    with pytest.raises(ValueError, match="outside the dataset store"):
        storage.write_bytes(bad, b"x")
    with pytest.raises(ValueError, match="outside the dataset store"):
        storage.read_bytes(bad)


def test_s3_objects_live_under_the_prefix(s3_server, s3_env, tmp_path):
    bucket = s3_server.new_bucket()
    store = S3Storage(bucket, "prod/ds/", endpoint_url=s3_server.endpoint_url, scratch_root=tmp_path)
    store.write_bytes("manifests/2026-12-01.json", b"{}")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["prod/ds/manifests/2026-12-01.json"]
    assert store.list("") == ["manifests/2026-12-01.json"]
    assert repr(store) == f"S3Storage('s3://{bucket}/prod/ds')"


def test_s3_large_publish_is_a_multipart_upload(s3_server, s3_env, tmp_path):
    """Above the threshold the upload goes in parts (S3's minimum part is 5 MiB) and the
    object is the whole file once complete."""
    bucket = s3_server.new_bucket()
    store = S3Storage(bucket, endpoint_url=s3_server.endpoint_url, scratch_root=tmp_path,
                      multipart_threshold_bytes=5 << 20, multipart_chunk_bytes=5 << 20)
    data = os.urandom((12 << 20) + 1)
    local = store.scratch_dir() / "big.part"
    local.write_bytes(data)
    store.publish(local, NAME)
    head = s3_server.client().head_object(Bucket=bucket, Key=NAME)
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part upload
    digest = hashlib.sha256()
    for chunk in store.read_range(NAME, 0, len(data)):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_s3_read_range_stopped_early_closes_the_body(s3_server, s3_env, tmp_path):
    """A cut download stops the generator; the object's stream must be closed then."""
    bucket = s3_server.new_bucket()
    store = S3Storage(bucket, endpoint_url=s3_server.endpoint_url, scratch_root=tmp_path)
    local = store.scratch_dir() / "f.part"
    local.write_bytes(os.urandom(3 * CHUNK))
    store.publish(local, NAME)
    class RecordingBody:
        def __init__(self, body) -> None:
            self.body, self.closed = body, False

        def iter_chunks(self, size: int):
            return self.body.iter_chunks(size)

        def close(self) -> None:
            self.closed = True
            self.body.close()

    bodies: list[RecordingBody] = []
    real_get = store.client.get_object

    def get_object(**kwargs):
        answer = real_get(**kwargs)
        bodies.append(RecordingBody(answer["Body"]))
        return {**answer, "Body": bodies[-1]}

    store.client.get_object = get_object
    chunks = store.read_range(NAME, 0, 3 * CHUNK)
    assert len(next(chunks)) > 0
    assert not bodies[0].closed
    chunks.close()
    assert bodies[0].closed
