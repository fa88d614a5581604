"""Files that appear whole or not at all: write to a temporary file beside the target, then ``os.replace`` it.

Training runs write checkpoints, metrics and weights every epoch and can be interrupted at any moment (Ctrl-C, a
killed job, a full disk); a reader, or the ``--resume`` of the next run, must then find the previous complete
file, never half of a new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception the file written there
    replaces ``path`` (atomic on one file system), otherwise it is removed and ``path`` is left as it was.

    Example::

        with atomic_path(out / "last.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600 files; the result gets the mode open() would give
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
