"""Keep the memory a chunk of messages used for the next chunk.

A send worker builds a chunk of complete messages at once (a hundred of some
70 KB each by default), hands them to the transport, which makes its own
copies to write, and drops them all. With glibc's defaults that memory went
back to the kernel after every chunk (freed space at the top of the heap is
returned once it exceeds 128 KB, and blocks of 128 KB or more are mapped and
unmapped one by one), so the next chunk took it again page by page: some 35
page faults a message, which cost twice the CPU of building and dot-stuffing
it. Raising the two thresholds keeps that memory in the process: its
resident size stays at what one chunk needs, and no longer goes up and down.
"""

from __future__ import annotations

import ctypes
import sys

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 64 << 20  # free memory kept at the top of the heap
MMAP_THRESHOLD = 4 << 20  # a message (or a copy of it) under this comes from the heap, not its own mapping


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # musl has a mallopt that does nothing and says so with 0.
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
