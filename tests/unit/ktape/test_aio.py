"""ktape/aio.py's all_of: concurrent results in order; a failure cancels the rest and is
raised as itself, after they have stopped."""

from __future__ import annotations

import asyncio

import pytest

from ktape.aio import all_of


def test_results_come_in_the_order_given_and_the_awaitables_overlap() -> None:
    async def main() -> list:
        go = asyncio.Event()

        async def waits() -> str:
            await go.wait()  # only the second awaitable sets it: they run side by side
            return "first"

        async def sets() -> str:
            go.set()
            return "second"

        return await asyncio.wait_for(all_of(waits(), sets()), timeout=5)

    assert asyncio.run(main()) == ["first", "second"]


def test_a_failure_cancels_the_others_and_is_raised_as_itself() -> None:
    stopped: list[str] = []

    async def main() -> None:
        async def long() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                stopped.append("long")

        async def fail() -> None:
            await asyncio.sleep(0.01)
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):  # not an ExceptionGroup
            await all_of(long(), fail())
        assert stopped == ["long"]  # stopped before all_of raised

    asyncio.run(main())
