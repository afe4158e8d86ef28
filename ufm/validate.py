r"""Validation helpers shared by every constructor.

Each raises ``ValueError`` naming the parameter, its value and the allowed range, in Python, before anything is traced
or compiled."""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from ufm import losses as _losses

__all__ = [
    "cast_checked",
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


def check_int(name: str, value, *, lo: int) -> int:
  """Validates an integer >= ``lo`` (floats with an integral value are refused)."""
  ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
  if not ok:
    raise ValueError(f"{name} = {value!r} is not an integer; allowed range: integers >= {lo}")
  if value < lo:
    raise ValueError(f"{name} = {value!r} is out of range; allowed range: integers >= {lo}")
  return int(value)


def check_counts(counts) -> tuple[int, ...]:
  if not isinstance(counts, (list, tuple, np.ndarray)):
    raise ValueError(f"counts = {counts!r} is not a sequence of class counts; "
                     "allowed: a sequence of K >= 2 integers >= 1")
  counts = tuple(counts.tolist() if isinstance(counts, np.ndarray) else counts)
  if len(counts) < 2:
    raise ValueError(f"K = {len(counts)} (from counts = {counts!r}) is out of range; "
                     "allowed range: K >= 2")
  return tuple(check_int(f"counts[{k}]", c, lo=1) for k, c in enumerate(counts))


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


