"""Giving freed memory back to the system after a study.

Decoding and preprocessing a large study allocate hundreds of MB of numpy arrays
on worker threads. When they are freed, glibc keeps most of it in its per-thread
arenas, so the node's resident memory stays at its high-water mark between
studies (measured with bench/growth.py: 1.8 GB idle after one 1,000-slice CT).
``trim_heap`` asks glibc to return free pages (``malloc_trim``); elsewhere it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Return freed heap memory to the system; True if glibc released some."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
