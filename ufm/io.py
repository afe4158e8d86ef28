"""File I/O shared by sweeps and experiments: atomic writes, so that a reader never sees a half-written file."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable) -> None:
  """Writes a file atomically: ``write(f)`` into a temporary file beside ``path`` (same directory, so the same
  file system), ``fsync``, then ``os.replace``; a reader sees the old file or the new one, never a partial one
  (``os.replace`` is atomic on POSIX and Windows). The temporary file is removed if ``write`` raises."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
