"""The persistent compilation cache: compiled programs kept on disk, so that a second run compiles nothing.

Users wait on compilation, not on arithmetic: a claim example or the README's first command spends most of its
time compiling the same few programs every run. JAX can keep compiled executables on disk (its persistent
compilation cache, keyed by the program, the JAX and XLA versions, the backend and the compile options), and a
later process that needs the same program loads it instead of compiling. The command lines of ufm
(``python -m ufm``, ``python -m experiments``) turn it on with :func:`enable`; a library user calls it once.

Where: ``$UFM_COMPILATION_CACHE`` if it names a directory, else ``$XDG_CACHE_HOME/ufm/jax`` (``~/.cache/ufm/jax``).
``UFM_COMPILATION_CACHE=0`` (or ``off``, ``false``, ``no``) turns it off. A cache directory already set in JAX's own
configuration (``jax_compilation_cache_dir``) is left as it is. Every program is cached, however short its
compilation (JAX's default threshold of one second would skip most of ufm's).
"""

import os
from pathlib import Path

import jax

__all__ = ["ENV", "default_dir", "enable"]

#: Environment variable: a directory for the cache, or 0/off/false/no to disable it.
ENV = "UFM_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no")


def default_dir() -> Path | None:
  """The cache directory :func:`enable` would use (``None`` when disabled through :data:`ENV`)."""
  value = os.environ.get(ENV, "").strip()
  if value.lower() in _OFF:
    return None
  if value:
    return Path(value).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "ufm" / "jax"


def enable(directory: str | os.PathLike | None = None) -> Path | None:
  """Turns JAX's persistent compilation cache on in ``directory`` (default :func:`default_dir`); returns it.

  Returns ``None`` (and changes nothing) when :data:`ENV` disables the cache, or when the directory cannot be
  created or written (the run goes on without a cache). A directory already configured in JAX is kept and returned.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return Path(current)
  path = Path(directory).expanduser() if directory is not None else default_dir()
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
      return None
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
