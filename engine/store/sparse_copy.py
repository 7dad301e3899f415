"""Copies of a store's folder that keep its files sparse.

Qdrant Edge maps its vectors, payloads and write-ahead log onto files of 32 MiB that it grows by
leaving holes: a store of 36 products takes 4 MB on disk while its files add up to 470 MB.
``shutil.copytree`` writes every hole out as zeros, so each backup of that store took 470 MB,
and a serving API backed up 25 times filled a 12 GB disk. Here a run of zeros is skipped with a
seek instead of written, which gives the same bytes to any reader and the same disk use as the
source, on every file system that keeps holes (and a plain copy on one that does not).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# Where the file system cannot say where its holes are, zeros are found (and skipped) 64 KiB at a time.
BLOCK = 1 << 16
_ZEROS = bytes(BLOCK)


def _data_extents(fd: int, size: int):
    """The (start, end) byte ranges that hold data, as the file system reports them
    (SEEK_DATA / SEEK_HOLE); the whole file, as one range, where it cannot say."""
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)]
    extents, pos = [], 0
    try:
        while pos < size:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end))
            pos = end
    except OSError as e:
        if e.errno != errno.ENXIO:  # ENXIO: no data past pos; anything else: the call is not supported
            return [(0, size)]
    return extents


def copy_sparse(source: str | os.PathLike, dest: str | os.PathLike) -> str:
    """Copy the file ``source`` to ``dest`` with its holes (and runs of zeros) left as holes; keeps
    the mode and times like ``shutil.copy2``. Returns ``dest`` (the signature ``copytree`` expects)."""
    with open(source, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as out:
        size = os.fstat(src.fileno()).st_size
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        for start, end in _data_extents(src.fileno(), size):
            src.seek(start)
            pos = start
            while pos < end and (read := src.readinto(view[:min(BLOCK, end - pos)])):
                block = view[:read]
                if block != _ZEROS[:read]:
                    out.seek(pos)
                    written = 0
                    while written < read:
                        written += out.write(block[written:])
                pos += read
        out.truncate(size)  # the length, holes at the end included
    shutil.copystat(source, dest)
    return str(dest)


def copy_tree(source: Path, dest: Path, ignore=None) -> None:
    """``shutil.copytree`` of a store's folder with every file copied sparse."""
    shutil.copytree(source, dest, ignore=ignore, copy_function=copy_sparse)


def disk_bytes(folder: Path) -> int:
    """The bytes a folder's files take on disk (their allocated blocks, holes not counted)."""
    return sum(path.lstat().st_blocks * 512 for path in Path(folder).rglob("*") if path.is_file())
