"""The memory allocator of a model slot's process: keep freed memory for the next batch instead of giving it back.

A CPU model allocates and frees the same large activation buffers (tens of MiB) in every batch. glibc's malloc
serves each of them with a fresh ``mmap`` and returns it with ``munmap``, so every batch faults every page in again;
on the 2-core development VM that kernel work was half of lite0's time (0.78 s per batch of 32; 0.35 s with the
settings below, 4.2 M -> 0.3 M page faults over 14 batches, peak memory 1.34 -> 1.56 GB). :func:`keep_freed_memory`
raises glibc's mmap and trim thresholds so those buffers come from the heap and stay there between batches (the
same advice PyTorch gives for CPU inference: jemalloc, tcmalloc, or these glibc settings).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30
"""Allocations below this come from the heap (not ``mmap``), and up to this much free memory stays at its top."""
OLD_GLIBC_MMAP_MAX = 32 << 20
"""The largest mmap threshold glibc before 2.35 accepts (``HEAP_MAX_SIZE / 2`` on 64-bit)."""
TOP_PAD_BYTES = 1 << 28
"""The heap grows by at least this much at a time."""


def keep_freed_memory() -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to :data:`KEEP_BYTES` and ``M_TOP_PAD`` to
    :data:`TOP_PAD_BYTES` in this process (``mallopt``); True when all three were set. glibc before 2.35 refuses an
    mmap threshold over :data:`OLD_GLIBC_MMAP_MAX`: there the thresholds are set to that instead (buffers up to
    32 MiB are kept) and the result is False. A no-op returning False off Linux or without glibc's ``mallopt``
    (musl, say); memory a preloaded allocator (jemalloc ...) manages is unaffected."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the mmap threshold first: once the others are set, glibc stops raising it by itself, so they go only with it
    for keep in (KEEP_BYTES, OLD_GLIBC_MMAP_MAX):
        if mallopt(M_MMAP_THRESHOLD, keep) == 1:
            trim = mallopt(M_TRIM_THRESHOLD, keep) == 1
            pad = mallopt(M_TOP_PAD, TOP_PAD_BYTES) == 1
            return keep == KEEP_BYTES and trim and pad
    return False
