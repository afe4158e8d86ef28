r"""Validation helpers shared by every constructor.

Each raises ``ValueError`` naming the parameter, its value and the allowed range, in Python, before anything is traced
or compiled."""

import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np

from ufm import losses as _losses

__all__ = [
    "MAX_COUNT",
    "cast_checked",
    "check_memory",
    "check_scalar",
    "machine_memory",
    "check_bias",
    "check_counts",
    "check_dtype",
    "check_int",
    "check_loss",
    "check_loss_bias_dtype",
    "check_real",
    "check_seed",
]

def check_real(name: str, value, *, lo: float | None = None, lo_open: bool = False,
               hi: float | None = None, hi_open: bool = False) -> np.ndarray:
  """Validates a real scalar or array, returning it as a float64 NumPy array.

  Raises ``ValueError`` naming ``name``, the offending value and the allowed range
  when any element is NaN, infinite, non-numeric or outside ``[lo, hi]`` (open ends
  where ``lo_open``/``hi_open``). Runs in Python, before any compilation.
  """
  lo_s = "" if lo is None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
  hi_s = "" if hi is None else (f"< {hi:g}" if hi_open else f"<= {hi:g}")
  allowed = " and ".join(s for s in (lo_s, hi_s) if s) or "any finite real"
  if isinstance(value, (bool, np.bool_, str, bytes)):
    raise ValueError(f"{name} = {value!r} is not a number; allowed range: {allowed}")
  try:
    arr = np.asarray(value, dtype=np.float64)
    if np.asarray(value).dtype.kind in "USO":
      raise TypeError
  except (TypeError, ValueError):
    raise ValueError(f"{name} = {value!r} is not a number; allowed range: {allowed}") from None
  shown = arr.item() if arr.ndim == 0 else arr.tolist()
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} = {shown!r} is not finite (NaN or inf); allowed range: {allowed}")
  bad = np.zeros(arr.shape, bool)
  if lo is not None:
    bad |= (arr <= lo) if lo_open else (arr < lo)
  if hi is not None:
    bad |= (arr >= hi) if hi_open else (arr > hi)
  if np.any(bad):
    raise ValueError(f"{name} = {shown!r} is out of range; allowed range: {allowed}")
  return arr


def cast_checked(name: str, arr: np.ndarray, dtype) -> jax.Array:
  """Casts a validated value to ``dtype``, refusing overflow to inf and underflow of a non-zero value to 0."""
  with np.errstate(over="ignore", under="ignore"):
    out = np.asarray(arr, np.float64).astype(jnp.dtype(dtype))
  shown = arr.item() if np.ndim(arr) == 0 else np.asarray(arr).tolist()
  info = jnp.finfo(dtype)
  if not np.all(np.isfinite(out)):
    raise ValueError(f"{name} = {shown!r} overflows {jnp.dtype(dtype).name}; allowed range: "
                     f"|{name}| <= {float(info.max):g}")
  if np.any((out == 0) & (np.asarray(arr) != 0)):
    raise ValueError(f"{name} = {shown!r} underflows to 0 in {jnp.dtype(dtype).name}; allowed range: "
                     f"0 or |{name}| >= {float(info.tiny):g}")
  return jnp.asarray(out, dtype)


def check_seed(name: str, value) -> np.ndarray:
  """Validates integer seed(s) in ``[0, 2**32)`` (the range of a ``jax.random.key`` seed as uint32)."""
  v = np.asarray(value)
  if not np.issubdtype(v.dtype, np.integer) or np.any(v < 0) or np.any(v >= 2**32):
    raise ValueError(f"{name} = {v.tolist()!r} is out of range; allowed: integers 0 <= seed < 2**32")
  return v


def check_int(name: str, value, *, lo: int, hi: int | None = None) -> int:
  """Validates an integer in ``[lo, hi]`` (``hi`` optional; floats with an integral value are refused)."""
  allowed = f"integers >= {lo}" if hi is None else f"integers {lo} <= {name} <= {hi:,}"
  ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
  if not ok:
    raise ValueError(f"{name} = {value!r} is not an integer; allowed range: {allowed}")
  if value < lo or (hi is not None and value > hi):
    raise ValueError(f"{name} = {value!r} is out of range; allowed range: {allowed}")
  return int(value)


def check_scalar(name: str, value, **bounds) -> np.ndarray:
  """:func:`check_real` of a single number (a 0-d array): ``[]``, a list or an array are refused by name."""
  arr = check_real(name, value, **bounds)
  if arr.ndim:
    raise ValueError(f"{name} = {np.asarray(value).tolist()!r} is not a scalar (shape {arr.shape}); allowed: one "
                     "number (vmap or sweep for a batch)")
  return arr


#: Largest class count: labels are int32 and ``N = sum(counts)`` indexes arrays.
MAX_COUNT = 2**31 - 1


def machine_memory() -> int:
  """Bytes of physical memory of this machine (``os.sysconf``; 16 GiB where the platform does not say)."""
  try:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (AttributeError, ValueError, OSError):
    return 16 * 2**30


def _bytes(n: int | float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
    if n < 1024 or unit == "PiB":
      return f"{n:.1f} {unit}"
    n /= 1024


def check_memory(what: str, nbytes: int | float, *, limit: int | None = None) -> None:
  """``ValueError`` when an allocation of ``nbytes`` (described by ``what``, e.g. "K = 10^6, N = 10^6: the
  one-hot labels Y (K x N x 8 bytes)") exceeds ``limit`` (default: :func:`machine_memory`), before allocating."""
  limit = machine_memory() if limit is None else limit
  if nbytes > limit:
    raise ValueError(f"{what} need {_bytes(nbytes)}; allowed: at most this machine's memory ({_bytes(limit)})")


def check_counts(counts) -> tuple[int, ...]:
  if not isinstance(counts, (list, tuple, np.ndarray)):
    raise ValueError(f"counts = {counts!r} is not a sequence of class counts; "
                     "allowed: a sequence of K >= 2 integers >= 1")
  counts = tuple(counts.tolist() if isinstance(counts, np.ndarray) else counts)
  if len(counts) < 2:
    raise ValueError(f"K = {len(counts)} (from counts = {counts!r}) is out of range; "
                     "allowed range: K >= 2")
  counts = tuple(check_int(f"counts[{k}]", c, lo=1, hi=MAX_COUNT) for k, c in enumerate(counts))
  if sum(counts) > MAX_COUNT:
    raise ValueError(f"N = sum(counts) = {sum(counts):,} is out of range; allowed range: N <= {MAX_COUNT:,}")
  return counts


def check_dtype(dtype) -> np.dtype:
  """``dtype`` as a NumPy dtype if it is float32 or float64; ``ValueError`` naming it and the allowed values
  otherwise."""
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    raise ValueError(f"dtype = {dtype!r} is not a dtype; allowed: float32, float64") from None
  if not jnp.issubdtype(dt, jnp.floating):
    raise ValueError(f"dtype = {dtype!r} is not a floating dtype; allowed: float32, float64")
  if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
    raise ValueError(f"dtype = {dtype!r} is not supported; allowed: float32, float64")
  return dt


def check_loss_bias_dtype(loss, bias, dtype) -> np.dtype:
  """Validates the static options every problem class shares: ``loss`` registered in :mod:`ufm.losses`, ``bias`` a
  boolean, ``dtype`` float32 or float64 (default: float64 under x64, else float32). Returns the dtype;
  ``ValueError`` naming the parameter and the allowed values otherwise."""
  check_loss(loss)
  check_bias(bias)
  return check_dtype(dtype or jnp.result_type(float))


def check_loss(loss) -> str:
  """``loss`` if it names a loss of :mod:`ufm.losses`; ``ValueError`` listing the registered names otherwise."""
  return _losses.get(loss).name


def check_bias(bias) -> bool:
  """``bias`` as a bool if it is one; ``ValueError`` otherwise."""
  if not isinstance(bias, (bool, np.bool_)):
    raise ValueError(f"bias = {bias!r} is not a boolean; allowed values: True, False")
  return bool(bias)


