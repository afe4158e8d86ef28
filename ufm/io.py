"""File I/O shared by sweeps and experiments: atomic writes, so that a reader never sees a half-written file."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "check_writable_dir", "check_writable_file"]


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


def _unwritable(path: Path) -> str | None:
  """Why the directory ``path`` cannot be written (``None`` when it can), found by creating it if needed and
  creating and removing a file in it: ``os.access`` says yes to read-only file systems when run as root."""
  if path.exists() and not path.is_dir():
    return f"{str(path)!r} is not a directory"
  try:
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".ufm-write-probe-")
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    return f"{str(path)!r} cannot be written ({e.strerror})"
  return None


def check_writable_dir(name: str, path) -> Path:
  """``path`` as a ``Path`` to a directory that exists (or is created) and can be written; ``ValueError`` naming
  ``name`` otherwise, before any computation."""
  path = Path(path)
  why = _unwritable(path)
  if why:
    raise ValueError(f"{name} = {str(path)!r}: {why}; allowed: a writable directory")
  return path


def check_writable_file(name: str, path) -> Path:
  """``path`` as a ``Path`` that is not a directory, in a directory :func:`check_writable_dir` accepts; ``ValueError``
  naming ``name`` otherwise (checked before any computation)."""
  path = Path(path)
  if path.is_dir():
    raise ValueError(f"{name} = {str(path)!r} is a directory; allowed: a file path in a writable directory")
  why = _unwritable(path.parent)
  if why:
    raise ValueError(f"{name} = {str(path)!r}: {why}; allowed: a file path in a writable directory")
  return path
