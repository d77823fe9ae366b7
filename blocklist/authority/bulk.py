"""Work on millions of objects in a worker thread without freezing the event loop.

A worker thread shares the GIL with the event loop, which gets it back every few milliseconds —
except inside one long C-level step. Two such steps dominate a 1M-line import (measured with
bench/authority_import_longpoll.py): the cyclic garbage collector's full passes over the
millions of live objects (growing to seconds each), and freeing them all at once when the last
reference goes. `gc_paused` keeps the collector off while an import runs (its objects hold no
cycles worth collecting early; it also makes the import several times faster), and `drain`
frees a large list in slices, so the loop runs between them.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
SLICE = 5000


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector until every overlapping `gc_paused` block has ended."""
    global _pauses
    with _lock:
        if _pauses == 0:
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0:
                gc.enable()


def drain(items: list) -> None:
    """Empty `items` a slice at a time (the objects die with their last reference)."""
    while items:
        del items[-SLICE:]
