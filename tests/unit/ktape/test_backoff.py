"""Supervisor backoff: capped, jittered, grows exponentially."""

import random

from ktape.aio import Backoff
from ktape.supervisor import ChildSpec, _dependency_order


def test_backoff_is_capped_and_jittered():
    b = Backoff(initial_secs=1, max_secs=8, rng=random.Random(7))
    delays = [b.delay(n) for n in range(10)]
    for n, d in enumerate(delays):
        ceiling = min(8, 2**n)
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 8
    assert len(set(delays)) == len(delays)


async def _ready() -> bool:
    return True


def test_dependency_order_is_topological_and_stable():
    specs = [
        ChildSpec("envoy", ["x"], _ready, depends_on=["queryd"]),
        ChildSpec("queryd", ["x"], _ready, depends_on=["questdb"]),
        ChildSpec("questdb", ["x"], _ready),
        ChildSpec("billingd", ["x"], _ready),
    ]
    assert [s.name for s in _dependency_order(specs)] == ["questdb", "queryd", "envoy", "billingd"]


def test_dependency_cycle_is_rejected():
    import pytest

    specs = [ChildSpec("a", ["x"], _ready, depends_on=["b"]),
             ChildSpec("b", ["x"], _ready, depends_on=["a"])]
    with pytest.raises(ValueError, match="cycle"):
        _dependency_order(specs)
