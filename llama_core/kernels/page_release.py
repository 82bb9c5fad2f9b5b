"""Giving back the pages of a memory-mapped weight as soon as loading has read it.

Checkpoints are memory-mapped: a weight used as stored costs no copy, its pages come in from the
page cache as they are read. But every weight that loading converts (a dtype change, the input-major
re-layout, fusing q/k/v, quantizing) is read whole, so its file pages become resident in this process
and stay so until the whole mapping goes — at the end of loading, after every copy was made. The
peak was the file plus the model (an fp32 load with the re-layout: twice the model).

`release_file_pages` drops this process's resident pages of a tensor (madvise MADV_DONTNEED), and
`copy_releasing` copies a weight a block of rows at a time, dropping each block's pages once copied,
so loading holds a few megabytes of the file at a time. Only file-backed mappings are touched (read
from /proc/self/maps): dropping a clean file page loses nothing — a later read faults it in again
from the file — whereas on anonymous memory MADV_DONTNEED would zero live data. (A private mapping's
page written to would lose the write; the loaders never write into their mappings.) Only whole pages
inside the tensor are dropped; a page shared with a neighbouring tensor stays. Elsewhere than Linux
it does nothing. `return_freed_memory` hands the heap's freed pages back to the OS (glibc keeps them).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import torch
from torch import Tensor

MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


ROWS_BYTES = 1 << 24  # bytes of a source copied before its pages are dropped: 16 MiB


def copy_releasing(target: Tensor, source: Tensor) -> Tensor:
    """`target.copy_(source)` (any dtype and strides) a block of rows at a time, dropping each block's file
    pages once copied; returns `target`."""
    rows = source.shape[0]
    step = max(1, ROWS_BYTES // max(1, source[0].numel() * source.element_size()))
    for start in range(0, rows, step):
        target[start : start + step].copy_(source[start : start + step])
        release_file_pages(source[start : start + step])
    return target


def converted(source: Tensor, dtype: torch.dtype) -> Tensor:
    """`source.to(dtype)`, copied block by block with the file pages dropped as it goes (no copy if in dtype)."""
    if source.dtype == dtype or source.dim() == 0:
        return source
    return copy_releasing(torch.empty(source.shape, dtype=dtype), source)


def return_freed_memory() -> None:
    """Hand the heap's freed pages (replaced weights, temporaries) back to the OS; glibc keeps them otherwise."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim, or no way to
        pass


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
    return _madvise(first, last)


def release_files_under(folder: Path) -> int:
    """Drop this process's resident pages of every file mapped from under `folder` (a checkpoint's): what a
    format reader read while preparing its tensors (Hugging Face's q/k un-permute copies wq and wk, reading
    them whole) and no longer holds. Returns the bytes given back."""
    folder = Path(folder).resolve()
    # A Hub snapshot's files are symbolic links into the cache's blobs: the mapping names the blob.
    files = {str(entry.resolve()) for entry in folder.iterdir() if entry.is_file()} if folder.is_dir() else set()
    released = 0
    for low, high, path in _file_mappings():
        if path in files or path.startswith(f"{folder}{os.sep}"):
            released += _madvise(low, high)
    return released


def _file_mappings() -> list[tuple[int, int, str]]:
    try:
        lines = Path(f"/proc/{os.getpid()}/maps").read_text().splitlines()
    except OSError:
        return []
    mappings = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            mappings.append((low, high, fields[5]))
    return mappings


def _madvise(first: int, last: int) -> int:
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
    return any(low <= first and last <= high and not path.endswith("(deleted)")
               for low, high, path in _file_mappings())
