"""A byte budget shared by every request of one worker process. Knows no HTTP.

Request bodies are held whole in memory while they are decoded and answered. Each one is
bounded (``WATCHTIME_MAX_BODY_BYTES``), but many held at once are not: 80 uploads of 31 MiB,
each stopped before its last byte, once added 2.4 GiB to a worker. The protocol layer takes
a body's bytes from this budget as they arrive and gives them back when its request ends,
so the bodies one worker holds never add up to more than the budget; a body that does not
fit is refused at once (503 with ``Retry-After``) instead.

Only the event loop's thread takes and gives, so a plain counter suffices.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("watchtime.budget")

TRIM_AFTER_BYTES = 16 * 1024 * 1024
"""Once this many body bytes were given back since the last trim, and no body is held any
more, the C allocator is asked to return its free pages to the system (see :func:`trim`)."""


class ByteBudget:
    """At most ``limit`` bytes held at once, over every request of the process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._given_back = 0

    @property
    def free(self) -> int:
        return self.limit - self.held

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes; False (and nothing held) when they do not fit."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken before."""
        self.held -= n
        self._given_back += n
        if self.held == 0 and self._given_back >= TRIM_AFTER_BYTES:
            self._given_back = 0
            trim()


_libc: ctypes.CDLL | None = None
_trim_missing = False


def trim() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``).

    A body arrives in chunks of tens of KiB, which glibc serves from its heap, not from
    mappings of their own; once freed, that memory stays in the process (counted in its
    resident size) unless the heap is trimmed. Without glibc this does nothing.
    """
    global _libc, _trim_missing
    if _trim_missing:
        return
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name)
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc.malloc_trim.restype = ctypes.c_int
        except (OSError, AttributeError):
            _trim_missing = True
            log.debug("no malloc_trim in the C library: freed body memory is not trimmed")
            return
    _libc.malloc_trim(0)
