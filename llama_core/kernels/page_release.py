"""Giving back the pages of a memory-mapped weight once a converted copy has replaced it.

Checkpoints are memory-mapped: a weight used as stored costs no copy, its pages come in from the
page cache as they are read. But every weight that loading converts (a dtype change, the input-major
re-layout, fusing q/k/v, quantizing) is read whole, so its file pages become resident in this process
and stay so until the whole mapping goes — at the end of loading, after every copy was made. The
peak was the file plus the model (an fp32 load with the re-layout: twice the model).

`release_file_pages` drops this process's pages of one replaced tensor at once (madvise
MADV_DONTNEED), so loading holds one tensor's pages at a time. It touches only file-backed mappings
(read from /proc/self/maps): dropping a file page loses nothing, the next read would fetch it again
from the file, whereas on anonymous memory MADV_DONTNEED would zero live data. Only whole pages
inside the tensor are dropped; a page shared with a neighbouring tensor stays. Elsewhere than Linux
it does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

from torch import Tensor

MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def release_file_pages(source: Tensor, replacement: Tensor | None = None) -> int:
    """Drop the resident file pages of `source` (unless `replacement` still shares its memory);
    returns the bytes given back."""
    if replacement is not None and _shares_storage(source, replacement):
        return 0
    if not source.is_contiguous() or source.numel() == 0:
        return 0
    start = source.data_ptr()
    end = start + source.numel() * source.element_size()
    first, last = -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE  # whole pages inside [start, end)
    if last <= first or not _file_backed(first, last):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED) != 0:
            return 0
    except (OSError, AttributeError):  # no libc madvise (not Linux): keep the pages
        return 0
    return last - first


def _shares_storage(a: Tensor, b: Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _file_backed(first: int, last: int) -> bool:
    """Whether [first, last) lies inside one mapping of a regular file."""
    maps = Path(f"/proc/{os.getpid()}/maps")
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= first and last <= high:
            path = fields[5] if len(fields) == 6 else ""
            return fields[4] != "0" and path.startswith("/") and not path.endswith("(deleted)")
    return False
