"""Giving freed memory back to the operating system after a large piece of work.

glibc's allocator keeps the pages of freed small blocks (libxml2's nodes, Python objects) in
the process: after a 64 MiB 副本 file or bulk-query file has been read and dropped, the
resident size would stay hundreds of megabytes above where it was, and a few such files would
hold gigabytes. ``malloc_trim(0)`` returns every free page. Measured on this project's 60 MiB
file: 545 MB resident after the file was dropped, 150 MB after the trim. Elsewhere than glibc
(musl, macOS) the call is absent and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any

__all__ = ["release_free_memory"]


def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Collect garbage, then hand the allocator's free pages back to the system."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
