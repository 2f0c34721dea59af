"""One background writer for the bulk paths: the caller prepares the next chunk while a thread
writes the last one (sqlite3, sockets and psycopg release the GIL while they wait)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Writer(Generic[T]):
    """The caller's end of a ``background_writer``: ``put`` queues an item (waiting for room;
    raising the consumer's error once it failed); ``waited`` is the seconds spent waiting."""

    def __init__(self, items: queue.Queue, failure: list[BaseException]):
        self._items, self._failure = items, failure
        self.waited = 0.0

    def put(self, item: T) -> None:
        started = time.perf_counter()
        while True:
            self._raise()
            try:
                self._items.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        self.waited += time.perf_counter() - started

    def _raise(self) -> None:
        if self._failure:
            raise self._failure[0]


@contextmanager
def background_writer(
    consume: Callable[[T], object], depth: int = 2, name: str = "background-writer"
) -> Iterator[Writer[T]]:
    """Run ``consume`` on every item put, in order, on one thread with a queue of ``depth``.

    Leaving the block waits until every item is consumed and raises the consumer's first error
    (items after it are dropped). When the block itself fails, what is still queued is dropped
    and the block's error propagates.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []
    stopping = threading.Event()

    def run() -> None:
        while (item := items.get()) is not _DONE:
            if failure or stopping.is_set():
                continue  # keep draining so that the caller never blocks on a full queue
            try:
                consume(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    writer: Writer[T] = Writer(items, failure)
    try:
        yield writer
    except BaseException:
        stopping.set()
        raise
    finally:
        items.put(_DONE)
        thread.join()
    writer._raise()
