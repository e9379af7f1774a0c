"""Give freed heap memory back to the kernel (glibc keeps it otherwise, and RSS only grows).

The feature stage allocates and frees many medium-sized numpy temporaries per
batch; glibc's allocator keeps the freed pages in its arenas, so a long run's
RSS creeps tens of megabytes above what is in use.  ``malloc_trim(0)`` hands
them back; it costs well under a millisecond, so calling it once a second is free.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc = None
try:
    _name = ctypes.util.find_library("c")
    _lib = ctypes.CDLL(_name) if _name else None
    if _lib is not None and hasattr(_lib, "malloc_trim"):
        _libc = _lib
except OSError:  # not glibc (musl, macOS): nothing to trim
    _libc = None


def release_free_memory() -> bool:
    """True when the C library was asked to return free memory."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
