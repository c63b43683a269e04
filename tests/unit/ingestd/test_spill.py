"""The spill file: order, checksums, torn tails, bound."""

import pytest

from ingestd.spill import SpillFile, SpillFull


def test_batches_come_back_in_order(tmp_path):
    spill = SpillFile(tmp_path / "s.spill", 1 << 20)
    for i in range(5):
        spill.append(f"batch {i}\n".encode())
    assert list(spill.batches()) == [f"batch {i}\n".encode() for i in range(5)]
    spill.clear()
    assert list(spill.batches()) == [] and spill.size == 0


def test_torn_or_corrupt_tail_stops_replay_at_last_good_frame(tmp_path):
    path = tmp_path / "s.spill"
    spill = SpillFile(path, 1 << 20)
    spill.append(b"one")
    spill.append(b"two")
    data = path.read_bytes()
    path.write_bytes(data[:-1])  # torn last frame
    assert list(spill.batches()) == [b"one"]
    path.write_bytes(data[:-3] + b"XYZ")  # corrupt payload of the last frame
    assert list(spill.batches()) == [b"one"]


def test_bound_is_enforced(tmp_path):
    spill = SpillFile(tmp_path / "s.spill", 40)
    spill.append(b"x" * 20)
    with pytest.raises(SpillFull):
        spill.append(b"y" * 20)
