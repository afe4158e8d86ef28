r"""UFM problem definitions: class counts, labels, weight decays, and parameters.

A :class:`Problem` is one instance of the unconstrained features model

.. math::
   \min_{W, H, b}\; \frac1N \sum_{i=1}^N \ell(W h_i + b, y_i)
   + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
   + \frac{\lambda_b}{2}\|b\|_2^2 ,

with ``K`` classes of ``counts[k]`` samples each (``N = sum(counts)``), features
``H`` (``d x N``, columns grouped by class), classifier ``W`` (``K x d``) and bias
``b`` (``K``). The objective itself lives in :mod:`ufm.objectives`.

Contract: every numeric hyperparameter (``lam_W``, ``lam_H``,
``lam_b``) is an array leaf, so a batch of problems is a ``Problem`` with leading
axes and ``jax.vmap`` sweeps them without recompiling. Everything that fixes a
shape or a code path (``counts``, ``d``, ``loss``, ``bias``) is static metadata.
All validation happens here, in Python, before anything is traced or compiled.
"""

import math
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ufm import losses as _losses
from ufm.validate import (cast_checked, check_counts, check_dtype, check_int, check_loss_bias_dtype, check_memory,
                          check_real, check_seed)

# Former private names, kept for code written against them (use ufm.validate).
_check_int, _check_counts = check_int, check_counts

__all__ = [
    "ClassCounts",
    "ClassStructure",
    "Family",
    "FamilyBase",
    "LOSSES",
    "Params",
    "Problem",
    "balanced_counts",
    "cast_checked",
    "check_dtype",
    "check_loss_bias_dtype",
    "check_solve_memory",
    "check_real",
    "check_seed",
    "init_params",
    "long_tailed_counts",
    "make_labels",
    "make_problem",
    "step_counts",
]

#: The two losses of the seed papers, CE and MSE (the registry :mod:`ufm.losses` has every loss, the parametrised
#: family of :mod:`ufm.loss_family` included; this tuple is kept for compatibility, and it is what
#: :func:`ufm.testing.problem_specs` draws by default).
LOSSES = ("ce", "mse")


def balanced_counts(K, n) -> tuple[int, ...]:
  """``K`` classes of ``n`` samples each: ``n_k = n``."""
  K = check_int("K", K, lo=2)
  n = check_int("n", n, lo=1)
  return (n,) * K


def step_counts(K, *, K_major, n_major, n_minor=None, rho=None) -> tuple[int, ...]:
  r"""Step imbalance (Fang et al. 2021, arXiv 2101.12699; Cao et al. 2019).

  The first ``K_major`` classes have ``n_major`` samples, the other ``K - K_major``
  have ``n_minor``; give either ``n_minor`` or the ratio ``rho = n_major / n_minor``
  (then ``n_minor = floor(n_major / rho)``).
  """
  K = check_int("K", K, lo=2)
  K_major = check_int("K_major", K_major, lo=1)
  if K_major >= K:
    raise ValueError(f"K_major = {K_major} is out of range; allowed range: 1 <= K_major <= K-1 = {K - 1}")
  n_major = check_int("n_major", n_major, lo=1)
  if (n_minor is None) == (rho is None):
    raise ValueError("step_counts needs exactly one of n_minor (integer >= 1) or rho (>= 1)")
  if rho is not None:
    rho = float(check_real("rho", rho, lo=1.0))
    n_minor = math.floor(n_major / rho)
    if n_minor < 1:
      raise ValueError(f"rho = {rho!r} is out of range for n_major = {n_major}: "
                       f"allowed range: 1 <= rho <= n_major = {n_major}")
  n_minor = check_int("n_minor", n_minor, lo=1)
  return (n_major,) * K_major + (n_minor,) * (K - K_major)


def long_tailed_counts(K, *, n_max, rho) -> tuple[int, ...]:
  r"""Long-tailed (exponential) profile of Cao et al. (2019, arXiv 1906.07413).

  .. math:: n_k = \lfloor n_{\max}\, \rho^{-k/(K-1)} \rfloor, \quad k = 0, \dots, K-1,

  so ``n_0 = n_max`` and ``n_{K-1} = floor(n_max / rho)``.
  """
  K = check_int("K", K, lo=2)
  n_max = check_int("n_max", n_max, lo=1)
  rho = float(check_real("rho", rho, lo=1.0))
  counts = tuple(math.floor(n_max * rho ** (-k / (K - 1)) + 1e-9) for k in range(K))
  if counts[-1] < 1:
    raise ValueError(f"rho = {rho!r} is out of range for n_max = {n_max}: the smallest class would "
                     f"be empty; allowed range: 1 <= rho <= n_max = {n_max}")
  return counts


def make_labels(counts, dtype=None) -> jax.Array:
  """One-hot labels ``Y`` (``K x N``) with columns grouped by class, in class order (``ValueError`` before
  allocating when ``Y`` would not fit in memory)."""
  counts = check_counts(counts)
  K, N = len(counts), sum(counts)
  check_memory(f"K = {K:,}, N = {N:,}: the one-hot labels Y (K x N x 8 bytes, built in float64)", 8.0 * K * N)
  labels = np.repeat(np.arange(len(counts)), counts)
  return jnp.asarray(np.eye(len(counts))[:, labels], dtype=dtype or jnp.result_type(float))


def check_solve_memory(K: int, N: int, d: int, dtype, *, widths: tuple[int, ...] = ()) -> None:
  """``ValueError`` before allocating when one solve's arrays would not fit in memory: the labels ``Y`` (``K x N``)
  and four copies (parameters, gradient, two optimiser moments) of ``W`` (``K x d``), ``H`` (``d x N``) and the
  layers ``W_m`` of a deep problem (``widths``)."""
  itemsize = np.dtype(dtype).itemsize
  layers = sum(a * b for a, b in zip(widths[1:], widths[:-1]))
  nbytes = itemsize * (K * N + 4 * (K * d + d * N + layers))
  check_memory(f"K = {K:,}, N = {N:,}, d = {d:,}: the arrays of one solve (labels, parameters, gradients, optimiser "
               "state)", nbytes)


class ClassCounts:
  """Properties of anything that holds per-class ``counts`` (problems, data sets, test specifications)."""

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


class ClassStructure(ClassCounts):
  """Properties shared by problem classes that hold ``counts`` and one-hot labels ``Y`` (class-major columns)."""

  @property
  def labels(self) -> jax.Array:
    """Integer labels ``(N,)`` matching the column order of ``Y``."""
    return jnp.asarray(np.repeat(np.arange(self.K), self.counts))

  @property
  def dtype(self):
    return self.Y.dtype


@runtime_checkable
class Family(Protocol):
  r"""The protocol every problem family follows (plain, deep linear, mixup, vicinity, spherical, ...).

  Solvers (:mod:`ufm.solvers`), sweeps (:mod:`ufm.sweep`), metrics and the theory dispatch
  (:func:`ufm.theory.predict`) use only these names; a new family is a pytree (``flax.struct.dataclass``) that
  subclasses :class:`FamilyBase` and defines ``value`` and ``init``.

  Attributes:
    FAMILY: the family's key for theory look-up (``"plain"``, ``"deep"``, ...).
    SCALAR_LEAVES: the names of the scalar hyperparameter leaves (array leaves, sweepable by ``vmap``).
    constrained: whether :meth:`project` is more than the identity (projected / Riemannian steps).
    K, d, dtype, loss, bias: number of classes, feature dimension, floating dtype, loss name (:mod:`ufm.losses`)
      and whether the classifier has a bias. Families with labelled samples (all but input mixup, whose free
      features are indexed by class pairs) also have ``counts``, ``N``, one-hot ``Y`` (``K x N``) and ``labels``.
  """
  FAMILY: ClassVar[str]
  SCALAR_LEAVES: ClassVar[tuple[str, ...]]
  d: int
  loss: str
  bias: bool

  @property
  def K(self) -> int: ...

  @property
  def dtype(self) -> Any: ...

  @property
  def constrained(self) -> bool: ...

  def value(self, params) -> jax.Array:
    """The objective at ``params`` (a scalar)."""
    ...

  def init(self, key: jax.Array, init_scale) -> Any:
    """Random parameters at scale ``init_scale`` (traceable)."""
    ...

  def project(self, params) -> Any:
    """The projection (or retraction) onto the feasible set; the identity for unconstrained families."""
    ...

  def replace(self, **changes) -> "Family":
    """A copy with some leaves replaced (``flax.struct``)."""
    ...


class FamilyBase(ClassStructure):
  """Defaults of the :class:`Family` protocol: unconstrained (``project`` is the identity), weight decays as the
  scalar leaves. Subclasses set ``FAMILY`` and define ``value`` and ``init``."""
  FAMILY: ClassVar[str] = ""
  SCALAR_LEAVES: ClassVar[tuple[str, ...]] = ("lam_W", "lam_H", "lam_b")

  @property
  def constrained(self) -> bool:
    return False

  def project(self, params):
    """The identity (no constraint)."""
    return params


@struct.dataclass
class Problem(FamilyBase):
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

  FAMILY: ClassVar[str] = "plain"

  def value(self, params: "Params") -> jax.Array:
    """The objective :func:`ufm.objectives.objective`."""
    from ufm.objectives import objective  # objectives imports this module
    return objective(params, self)

  def init(self, key: jax.Array, init_scale) -> "Params":
    """:func:`init_params`."""
    return init_params(key, self, init_scale)


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
  counts = check_counts(counts)
  d = check_int("d", d, lo=1)
  dtype = check_loss_bias_dtype(loss, bias, dtype)
  check_solve_memory(len(counts), sum(counts), d, dtype)
  lams = {name: check_real(name, v, lo=0.0) for name, v in
          (("lam_W", lam_W), ("lam_H", lam_H), ("lam_b", lam_b))}
  for name, v in lams.items():
    if v.size == 0:
      raise ValueError(f"{name} = [] is empty; allowed: a number >= 0 (or a non-empty array, a batch of problems)")
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
