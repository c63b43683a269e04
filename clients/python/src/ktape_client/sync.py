"""Client: AsyncClient's calls, blocking. One private event loop on a daemon thread runs
the async implementation; nothing here is a second implementation of a call."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from typing import Any

from ktape_client.aio import AsyncClient
from ktape_client.pages import AsyncPages


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="ktape-client")
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self.run(agen.aclose())


class Pages:
    """AsyncPages, blocking: iterate, or `to_df()` / `to_polars()` / `to_arrow()`."""

    def __init__(self, pages: AsyncPages, loop: _Loop) -> None:
        self._pages, self._loop = pages, loop

    def __iter__(self) -> Iterator[Any]:
        return self._loop.iterate(self._pages.__aiter__())

    def to_df(self) -> Any:
        return self._loop.run(self._pages.to_df())

    def to_arrow(self) -> Any:
        return self._loop.run(self._pages.to_arrow())

    def to_polars(self) -> Any:
        return self._loop.run(self._pages.to_polars())


class Client:
    """The same methods as AsyncClient (see there), returning values instead of
    awaitables: `Pages` for paged results, plain iterators for streams."""

    def __init__(self, api_key: str | None = None, target: str = "localhost:8080",
                 **options: Any) -> None:
        self._loop = _Loop()
        self._async: AsyncClient = self._loop.run(_make(api_key, target, options))

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client", 1)

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._async, name)
        if name.startswith("_") or not callable(member):
            return member

        def call(*args: Any, **kwargs: Any) -> Any:
            if inspect.isasyncgenfunction(member):
                return self._loop.iterate(member(*args, **kwargs))
            result = member(*args, **kwargs)
            if isinstance(result, AsyncPages):
                return Pages(result, self._loop)
            return self._loop.run(result) if inspect.isawaitable(result) else result

        call.__doc__ = member.__doc__
        return call

    def close(self) -> None:
        self._loop.run(self._async.close())
        self._loop.loop.call_soon_threadsafe(self._loop.loop.stop)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(api_key: str | None, target: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(api_key, target, **options)  # the channel binds to this loop
