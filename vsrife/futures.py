"""One bounded, thread-safe cache of futures, for values that must be computed once however many threads
ask at the same time: each is computed in the asking thread (:meth:`FutureCache.get`) or on a worker
pool, possibly before anyone asks (:meth:`FutureCache.start`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor


class FutureCache[K: Hashable, V]:
    """Keys to futures, at most ``capacity`` of them: past that the least recently used is dropped (whoever
    holds its future still gets the value). A computation that fails is forgotten, so a later call tries
    again. A value taken for good (:meth:`take`) is not started again in the background (:meth:`start`)
    while it is among the last ``capacity`` so taken: requests come out of order, and a look ahead from an
    earlier frame must not redo a later one's work (it did, for 40 % of the batches)."""

    def __init__(self, capacity: int, pool: ThreadPoolExecutor | None = None) -> None:
        self.capacity = capacity
        self._pool = pool
        self._lock = threading.Lock()
        self._items: OrderedDict[K, Future[V]] = OrderedDict()
        self._taken: dict[K, int] = {}  # how often a key was taken, while it is kept
        self._done: OrderedDict[K, None] = OrderedDict()  # keys taken for good, most recent last

    def get(self, key: K, compute: Callable[[], V]) -> V:
        """The value of ``key``: computed here by the first caller, waited for by the others, kept."""
        future, owner = self._claim(key, Future)
        if owner:
            try:
                future.set_result(compute())
            except BaseException as error:
                future.set_exception(error)
                self._forget(key, future)
        return future.result()

    def start(self, key: K, compute: Callable[[], V]) -> Future[V] | None:
        """Compute ``key`` on the pool unless it is known, under way or was just taken for good; its future
        (None when it was just taken)."""
        with self._lock:
            if key in self._done:
                return None
        return self._submit(key, compute)

    def _submit(self, key: K, compute: Callable[[], V]) -> Future[V]:
        assert self._pool is not None, "start() needs a pool"
        return self._claim(key, lambda: self._pool.submit(compute))[0]

    def take(self, key: K, compute: Callable[[], V], uses: int = 1) -> V:
        """The value of ``key`` (started on the pool if nobody started it, taken for good before or not),
        forgotten once it was taken ``uses`` times (or dropped as the least recently used)."""
        future = self._submit(key, compute)
        try:
            return future.result()
        finally:
            with self._lock:
                taken = self._taken.get(key, 0) + 1
                if taken >= uses:
                    self._taken.pop(key, None)
                    if self._items.get(key) is future:
                        del self._items[key]
                    self._done[key] = None
                    self._done.move_to_end(key)
                    while len(self._done) > self.capacity:
                        self._done.popitem(last=False)
                elif key in self._items:
                    self._taken[key] = taken

    def __len__(self) -> int:
        return len(self._items)

    def _claim(self, key: K, make: Callable[[], Future[V]]) -> tuple[Future[V], bool]:
        with self._lock:
            future = self._items.get(key)
            if future is not None:
                self._items.move_to_end(key)
                return future, False
            future = self._items[key] = make()
            while len(self._items) > self.capacity:
                dropped, _ = self._items.popitem(last=False)
                self._taken.pop(dropped, None)
            return future, True

    def _forget(self, key: K, future: Future[V]) -> None:
        with self._lock:
            if self._items.get(key) is future:
                del self._items[key]
                self._taken.pop(key, None)
