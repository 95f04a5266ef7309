"""Run the same client tests against both clients: `Client` and `AsyncClient` behind the sync API.

The `make_client` fixture (import `make_client_fixture` in a test module) is parametrized over "sync"
and "async": it builds a `Client`, or an `AsyncClient` wrapped in `BlockingAsyncClient`, whose every
coroutine runs on a private event loop thread and whose async iterators are read as iterators. So a
test written once against the sync API checks both clients (client/sdk.py is generated from
client/aio.py, and this proves the two behave alike, not only that they read alike).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

import pytest

from cronraft.client import AsyncClient, Client

_T = TypeVar("_T")
MakeClient = Callable[..., Client]


class BlockingAsyncClient:
    """An `AsyncClient` with the sync client's calling convention (for tests only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="async-client", daemon=True)
        self._thread.start()
        self._client = AsyncClient(*args, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, items: AsyncIterator[_T]) -> Iterator[_T]:
        while True:
            try:
                yield self._run(items.__anext__())  # type: ignore[arg-type]
            except StopAsyncIteration:
                return

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._run(attr(*a, **k))
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **k: self._iterate(attr(*a, **k))
        return attr

    def close(self) -> None:
        self._run(self._client.close())

    def shutdown(self) -> None:
        """Close the client, then stop and close its loop."""
        if self._loop.is_closed():
            return
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> BlockingAsyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


@pytest.fixture(name="make_client", params=["sync", "async"])
def make_client_fixture(request: pytest.FixtureRequest) -> Iterator[MakeClient]:
    made: list[BlockingAsyncClient] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        if request.param == "sync":
            return Client(*args, **kwargs)
        client = BlockingAsyncClient(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()
