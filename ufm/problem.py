r"""UFM problem definitions: class counts, labels, weight decays, and parameters.

A :class:`Problem` is one instance of the unconstrained features model

.. math::
   \min_{W, H, b}\; \frac1N \sum_{i=1}^N \ell(W h_i + b, y_i)
   + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
   + \frac{\lambda_b}{2}\|b\|_2^2 ,

with ``K`` classes of ``counts[k]`` samples each (``N = sum(counts)``), features
``H`` (``d x N``, columns grouped by class), classifier ``W`` (``K x d``) and bias
``b`` (``K``). The objective itself lives in :mod:`ufm.objectives`.

Contract (STYLE.md B.3): every numeric hyperparameter (``lam_W``, ``lam_H``,
``lam_b``) is an array leaf, so a batch of problems is a ``Problem`` with leading
axes and ``jax.vmap`` sweeps them without recompiling. Everything that fixes a
shape or a code path (``counts``, ``d``, ``loss``, ``bias``) is static metadata.
All validation happens here, in Python, before anything is traced or compiled.
"""

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "ClassStructure",
    "LOSSES",
    "Params",
    "Problem",
    "balanced_counts",
    "cast_checked",
    "check_dtype",
    "check_loss_bias_dtype",
    "check_real",
    "check_seed",
    "init_params",
    "long_tailed_counts",
    "make_labels",
    "make_problem",
    "step_counts",
]

LOSSES = ("ce", "mse")


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


def _check_int(name: str, value, *, lo: int) -> int:
  """Validates an integer >= ``lo`` (floats with an integral value are refused)."""
  ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
  if not ok:
    raise ValueError(f"{name} = {value!r} is not an integer; allowed range: integers >= {lo}")
  if value < lo:
    raise ValueError(f"{name} = {value!r} is out of range; allowed range: integers >= {lo}")
  return int(value)


def _check_counts(counts) -> tuple[int, ...]:
  if not isinstance(counts, (list, tuple, np.ndarray)):
    raise ValueError(f"counts = {counts!r} is not a sequence of class counts; "
                     "allowed: a sequence of K >= 2 integers >= 1")
  counts = tuple(counts.tolist() if isinstance(counts, np.ndarray) else counts)
  if len(counts) < 2:
    raise ValueError(f"K = {len(counts)} (from counts = {counts!r}) is out of range; "
                     "allowed range: K >= 2")
  return tuple(_check_int(f"counts[{k}]", c, lo=1) for k, c in enumerate(counts))


def balanced_counts(K, n) -> tuple[int, ...]:
  """``K`` classes of ``n`` samples each: ``n_k = n``."""
  K = _check_int("K", K, lo=2)
  n = _check_int("n", n, lo=1)
  return (n,) * K


def step_counts(K, *, K_major, n_major, n_minor=None, rho=None) -> tuple[int, ...]:
  r"""Step imbalance (Fang et al. 2021, arXiv 2101.12699; Cao et al. 2019).

  The first ``K_major`` classes have ``n_major`` samples, the other ``K - K_major``
  have ``n_minor``; give either ``n_minor`` or the ratio ``rho = n_major / n_minor``
  (then ``n_minor = floor(n_major / rho)``).
  """
  K = _check_int("K", K, lo=2)
  K_major = _check_int("K_major", K_major, lo=1)
  if K_major >= K:
    raise ValueError(f"K_major = {K_major} is out of range; allowed range: 1 <= K_major <= K-1 = {K - 1}")
  n_major = _check_int("n_major", n_major, lo=1)
  if (n_minor is None) == (rho is None):
    raise ValueError("step_counts needs exactly one of n_minor (integer >= 1) or rho (>= 1)")
  if rho is not None:
    rho = float(check_real("rho", rho, lo=1.0))
    n_minor = math.floor(n_major / rho)
    if n_minor < 1:
      raise ValueError(f"rho = {rho!r} is out of range for n_major = {n_major}: "
                       f"allowed range: 1 <= rho <= n_major = {n_major}")
  n_minor = _check_int("n_minor", n_minor, lo=1)
  return (n_major,) * K_major + (n_minor,) * (K - K_major)


def long_tailed_counts(K, *, n_max, rho) -> tuple[int, ...]:
  r"""Long-tailed (exponential) profile of Cao et al. (2019, arXiv 1906.07413).

  .. math:: n_k = \lfloor n_{\max}\, \rho^{-k/(K-1)} \rfloor, \quad k = 0, \dots, K-1,

  so ``n_0 = n_max`` and ``n_{K-1} = floor(n_max / rho)``.
  """
  K = _check_int("K", K, lo=2)
  n_max = _check_int("n_max", n_max, lo=1)
  rho = float(check_real("rho", rho, lo=1.0))
  counts = tuple(math.floor(n_max * rho ** (-k / (K - 1)) + 1e-9) for k in range(K))
  if counts[-1] < 1:
    raise ValueError(f"rho = {rho!r} is out of range for n_max = {n_max}: the smallest class would "
                     f"be empty; allowed range: 1 <= rho <= n_max = {n_max}")
  return counts


def make_labels(counts, dtype=None) -> jax.Array:
  """One-hot labels ``Y`` (``K x N``) with columns grouped by class, in class order."""
  counts = _check_counts(counts)
  labels = np.repeat(np.arange(len(counts)), counts)
  return jnp.asarray(np.eye(len(counts))[:, labels], dtype=dtype or jnp.result_type(float))


def check_dtype(dtype) -> np.dtype:
  """``dtype`` as a NumPy dtype if it names a floating dtype; ``ValueError`` naming it and the allowed values
  otherwise."""
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    raise ValueError(f"dtype = {dtype!r} is not a dtype; allowed: float32, float64") from None
  if not jnp.issubdtype(dt, jnp.floating):
    raise ValueError(f"dtype = {dtype!r} is not a floating dtype; allowed: float32, float64")
  return dt


def check_loss_bias_dtype(loss, bias, dtype) -> np.dtype:
  """Validates the static options every problem class shares: ``loss`` in :data:`LOSSES`, ``bias`` a boolean,
  ``dtype`` a floating dtype (default: float64 under x64, else float32). Returns the dtype; ``ValueError`` naming
  the parameter and the allowed values otherwise."""
  if loss not in LOSSES:
    raise ValueError(f"loss = {loss!r} is not supported; allowed values: {', '.join(LOSSES)}")
  if not isinstance(bias, (bool, np.bool_)):
    raise ValueError(f"bias = {bias!r} is not a boolean; allowed values: True, False")
  return check_dtype(dtype or jnp.result_type(float))


class ClassStructure:
  """Properties shared by problem classes that hold ``counts`` and one-hot labels ``Y`` (class-major columns)."""

  @property
  def K(self) -> int:
    return len(self.counts)

  @property
  def N(self) -> int:
    return sum(self.counts)

  @property
  def balanced(self) -> bool:
    return len(set(self.counts)) == 1

  @property
  def n(self) -> int | None:
    """Samples per class when balanced, else ``None``."""
    return self.counts[0] if self.balanced else None

  @property
  def labels(self) -> jax.Array:
    """Integer labels ``(N,)`` matching the column order of ``Y``."""
    return jnp.asarray(np.repeat(np.arange(self.K), self.counts))

  @property
  def dtype(self):
    return self.Y.dtype


@struct.dataclass
class Problem(ClassStructure):
  """One UFM instance; numeric hyperparameters are array leaves, shapes are static.

  Attributes:
    Y: one-hot labels, ``K x N``, columns grouped by class.
    lam_W, lam_H, lam_b: weight decays (scalar arrays, or arrays with leading batch
      axes when a batch of problems is built for ``vmap``).
    counts: per-class sample counts ``(n_1, ..., n_K)`` (static).
    d: feature dimension (static).
    loss: ``"ce"`` (softmax cross-entropy) or ``"mse"`` (static).
    bias: whether the classifier has a bias ``b`` (static).
  """
  # Leaves are typed Any, not jax.Array: vmap specs (``problem.replace(Y=None, lam_W=0)``) and
  # batching placeholders pass through the constructor too.
  Y: Any
  lam_W: Any
  lam_H: Any
  lam_b: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)
  d: int = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False, default="ce")
  bias: bool = struct.field(pytree_node=False, default=False)



def make_problem(counts, *, d, lam_W, lam_H, lam_b=0.0, loss="ce", bias=False, dtype=None) -> Problem:
  r"""Builds and validates a :class:`Problem`.

  Arguments are validated here rather than by type hints (so the error names the range).

  Args:
    counts: per-class counts (see :func:`balanced_counts`, :func:`step_counts`,
      :func:`long_tailed_counts`), ``K = len(counts) >= 2``, each an integer ``>= 1``.
    d: feature dimension, an integer ``>= 1``. ``d < K - 1`` (the ``K > d + 1``
      regime) is legal; :mod:`ufm.theory` refuses ETF predictions there.
    lam_W, lam_H, lam_b: weight decays, finite and ``>= 0`` (scalars or arrays,
      for a batch of problems).
    loss: ``"ce"`` or ``"mse"``.
    bias: whether the classifier has a bias.
    dtype: floating dtype of ``Y`` and the weight decays; defaults to JAX's default
      float (float64 under ``jax_enable_x64``).

  Raises:
    ValueError: naming the parameter, its value and the allowed range.
  """
  counts = _check_counts(counts)
  d = _check_int("d", d, lo=1)
  dtype = check_loss_bias_dtype(loss, bias, dtype)
  lams = {name: check_real(name, v, lo=0.0) for name, v in
          (("lam_W", lam_W), ("lam_H", lam_H), ("lam_b", lam_b))}
  if not bias and np.any(lams["lam_b"] != 0):
    raise ValueError(f"lam_b = {lams['lam_b'].tolist()!r} has no effect without a bias; allowed: lam_b = 0 "
                     "when bias=False (or set bias=True)")
  return Problem(Y=make_labels(counts, dtype), counts=counts, d=d, loss=loss, bias=bool(bias),
                 **{k: cast_checked(k, v, dtype) for k, v in lams.items()})


#: A :class:`Problem` or another problem class with its interface (``Y``, ``counts``, ``d``, ``loss``, ``bias``,
#: ``K``, ``N``, ``labels``, ``dtype``, and ``value`` / ``init`` / ``SCALAR_LEAVES``), e.g.
#: :class:`ufm.vicinity.VicinityProblem`. Solvers, sweeps and metrics accept any of them.
ProblemLike = Any

#: :class:`Params` or the parameter pytree of another problem class (e.g. :class:`ufm.deep.DeepParams`, which
#: also has ``W``, ``H`` and ``b``); what the solvers and metrics accept.
ParamsLike = Any


class Params(NamedTuple):
  """UFM parameters: classifier ``W`` (``K x d``), features ``H`` (``d x N``), bias ``b`` (``K``).

  ``b`` is always present so that every problem has the same pytree; it is unused
  (and stays zero) when ``problem.bias`` is false.
  """
  W: jax.Array
  H: jax.Array
  b: jax.Array


def init_params(key: jax.Array, problem: Problem, init_scale) -> Params:
  r"""Gaussian initialisation :math:`W_{kj}, H_{ji} \sim \mathcal N(0, s^2)`, ``b = 0``.

  ``init_scale`` (``s``) may be a traced array. The key is split once (``kW, kH``).
  """
  kW, kH = jax.random.split(key)
  dt = problem.dtype
  s = jnp.asarray(init_scale, dt)
  W = s * jax.random.normal(kW, (problem.K, problem.d), dt)
  H = s * jax.random.normal(kH, (problem.d, problem.N), dt)
  return Params(W=W, H=H, b=jnp.zeros((problem.K,), dt))
