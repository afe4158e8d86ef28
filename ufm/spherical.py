r"""The spherical, temperature-scaled UFM: features and classifiers on the unit sphere, any ``K`` and ``d``.

Jiang, Zhou, Wang, Qu, Mixon, You & Zhu ("Generalized Neural Collapse for a Large Number of Classes",
arXiv 2310.05351, ICML 2024, problem (3)) and Lu & Steinerberger (ACHA 2022, arXiv 2012.08465) study

.. math::
   \min_{W, H}\; \frac1N \sum_{i=1}^N \mathrm{CE}\Big(\frac{W h_i}{\tau},\, y_i\Big)
   \quad\text{s.t.}\quad \|w_k\|_2 = 1,\ \|h_i\|_2 = 1,

with temperature :math:`\tau > 0`, no bias and no weight decay (the constraints take its place).
For ``K <= d + 1`` the minimiser is a simplex ETF with :math:`h_i = w_{y_i}` (Lu & Steinerberger);
for ``K > d + 1`` Jiang et al. show that as :math:`\tau \to 0` the classifier tends to a *softmax
code* (:func:`ufm.geometry.softmax_code`) and the features collapse onto their classifiers
(GNC1–GNC3). ``ufm/theory/derivations.md`` §5.7.

**How the sphere is enforced.** :meth:`SphericalProblem.value` evaluates the objective on the
normalised rows of ``W`` and columns of ``H``, so it is invariant to their scale and its Euclidean
gradient at a unit vector is the Riemannian gradient (it is orthogonal to the point). With
``constrained=True`` (the default) :meth:`SphericalProblem.project` renormalises after every step,
so :func:`ufm.solvers.gradient_descent` is Riemannian gradient descent with the normalisation
retraction (Absil, Mahony & Sepulchre 2008, §4.1), and the reported ``grad_norm`` is the
Riemannian gradient norm. With ``constrained=False`` the same scale-invariant objective plus a gauge term that
is zero on the sphere (:meth:`SphericalProblem.scale_penalty`, which keeps the norms at 1) is an unconstrained
problem that :func:`ufm.solvers.lbfgs_reference` solves; read the solution through :func:`normalise`.

**Fixed classifiers.** Given ``W_fixed`` (``K x d``; e.g. :func:`ufm.geometry.fixed_classifier`),
the classifier is not learned: the objective uses ``W_fixed`` and ignores ``params.W``, which
:meth:`SphericalProblem.init` sets to ``W_fixed`` (so the NC metrics of :mod:`ufm.metrics` see the
fixed classifier) and which gradient descent never moves (its gradient is zero).

A :class:`SphericalProblem` runs in every solver and sweep of :mod:`ufm` (sweep axis ``tau``) and
works with :mod:`ufm.metrics` and :mod:`ufm.tiled`.
"""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jaxtyping import Array, Float

from ufm.problem import FamilyBase, Params, make_labels
from ufm.validate import cast_checked, check_counts, check_int, check_real

__all__ = ["SphericalProblem", "make_spherical_problem", "normalise", "unit_columns", "unit_rows"]


def unit_rows(W: Float[Array, "K d"]) -> Float[Array, "K d"]:
  r"""Rows scaled to unit Euclidean norm, :math:`w_k / \|w_k\|_2`."""
  return W / jnp.linalg.norm(W, axis=1, keepdims=True)


def unit_columns(H: Float[Array, "d N"]) -> Float[Array, "d N"]:
  r"""Columns scaled to unit Euclidean norm, :math:`h_i / \|h_i\|_2`."""
  return H / jnp.linalg.norm(H, axis=0, keepdims=True)


@struct.dataclass
class SphericalProblem(FamilyBase):
  """A spherical CE-UFM with temperature ``tau`` (see the module docstring for the objective).

  Attributes:
    Y: one-hot labels ``K x N`` (columns grouped by class).
    tau: the temperature, a scalar leaf (sweepable: axis ``"tau"``).
    W_fixed: the fixed classifier ``K x d`` with unit rows, or ``None`` when the classifier is learned.
    counts, d: static, as in :class:`ufm.problem.Problem`.
    constrained: static; ``True`` renormalises after every step (Riemannian gradient descent).
  """
  Y: Any
  tau: Any
  W_fixed: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)
  d: int = struct.field(pytree_node=False)
  constrained: bool = struct.field(pytree_node=False, default=True)

  FAMILY: ClassVar[str] = "spherical"
  SCALAR_LEAVES = ("tau",)
  loss = "ce"
  bias = False  # no bias in the spherical model; Params.b stays 0

  @property
  def fixed(self) -> bool:
    """Whether the classifier is fixed (``W_fixed`` given)."""
    return self.W_fixed is not None

  def classifier(self, params: Params) -> jax.Array:
    """The classifier the objective sees: ``W_fixed``, or the normalised rows of ``params.W``."""
    return self.W_fixed if self.fixed else unit_rows(params.W)

  def value(self, params: Params) -> jax.Array:
    r""":math:`\frac1N\sum_i \mathrm{CE}(\hat W \hat h_i/\tau, y_i)` on the normalised rows/columns
    (Jiang et al. 2024, arXiv 2310.05351, eq. (3))."""
    logits_KxN = self.classifier(params) @ unit_columns(params.H) / self.tau
    f = jnp.mean(optax.softmax_cross_entropy(logits_KxN.T, self.Y.T))
    if self.constrained:
      return f
    return f + self.scale_penalty(params)

  def scale_penalty(self, params: Params) -> jax.Array:
    r"""The gauge term of the unconstrained form (``constrained=False``):
    :math:`rac14igl(\mathrm{mean}_i(\|h_i\|^2 - 1)^2 + \mathrm{mean}_k(\|w_k\|^2 - 1)^2igr)` (the ``W`` term
    only for a learned classifier). It is 0 on the sphere and acts only along the radial directions, so the
    minimisers, normalised, and the minimum are those of the spherical problem; without it the scale-invariant
    objective's gradient scales as :math:`1/\|x\|`, and L-BFGS, whose steps change the norms, either shrinks a vector
    until the gradient blows up or grows one until the gradient vanishes without a minimum (measured: :math:`|
abla
    f| = 4\cdot10^{15}` after 3000 iterations at ``K = 4``, ``d = 2``, :math:`	au = 0.73`; a fixed-classifier feature
    "converged" to :math:`|
abla f| = 9\cdot10^{-11}` at the antipode of its optimum)."""
    r = 0.25 * jnp.mean((jnp.sum(params.H**2, axis=0) - 1) ** 2)
    if not self.fixed:
      r = r + 0.25 * jnp.mean((jnp.sum(params.W**2, axis=1) - 1) ** 2)
    return r

  def init(self, key: jax.Array, init_scale) -> Params:
    r"""Uniform on the sphere: Gaussian rows/columns, normalised (``init_scale`` has no effect: the
    objective sees only directions). ``W = W_fixed`` when the classifier is fixed."""
    kW, kH = jax.random.split(key)
    dt = self.dtype
    W = self.W_fixed if self.fixed else unit_rows(jax.random.normal(kW, (self.K, self.d), dt))
    H = unit_columns(jax.random.normal(kH, (self.d, self.N), dt))
    return Params(W=W, H=H, b=jnp.zeros((self.K,), dt))

  def project(self, params: Params) -> Params:
    """The retraction: rows of ``W`` and columns of ``H`` back to the unit sphere (``W`` fixed if given)."""
    W = self.W_fixed if self.fixed else unit_rows(params.W)
    return params._replace(W=W, H=unit_columns(params.H))


def normalise(params: Params, problem: SphericalProblem) -> Params:
  """``params`` on the sphere (what the objective sees): unit rows of ``W`` (or ``W_fixed``), unit columns of ``H``."""
  return params._replace(W=problem.classifier(params), H=unit_columns(params.H))


def make_spherical_problem(counts, *, d, tau, W_fixed=None, constrained=True, dtype=None) -> SphericalProblem:
  """Builds and validates a :class:`SphericalProblem` (errors name the parameter and its allowed range).

  Args:
    counts: per-class sample counts, ``K = len(counts) >= 2`` (any ``K``, also ``K >> d``).
    d: feature dimension, an integer ``>= 2`` (the unit circle is the smallest sphere with a geometry).
    tau: temperature ``> 0`` (scalar or array, for a batch of problems).
    W_fixed: optional fixed classifier, ``K x d`` with finite, non-zero rows; rows are normalised.
    constrained: renormalise after every step (gradient descent); ``False`` for L-BFGS.
    dtype: floating dtype (default: JAX's default float).

  Raises:
    ValueError: naming the parameter, its value and the allowed range.
  """
  counts = check_counts(counts)
  d = check_int("d", d, lo=2)
  if not isinstance(constrained, (bool, np.bool_)):
    raise ValueError(f"constrained = {constrained!r} is not a boolean; allowed values: True, False")
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype = {dtype!r} is not a floating dtype; allowed: float32, float64")
  tau_leaf = cast_checked("tau", check_real("tau", tau, lo=0.0, lo_open=True), dtype)
  W = None
  if W_fixed is not None:
    W0 = np.asarray(W_fixed, np.float64)
    if W0.shape != (len(counts), d):
      raise ValueError(f"W_fixed has shape {W0.shape}; allowed: (K, d) = ({len(counts)}, {d})")
    norms = np.linalg.norm(W0, axis=1) if np.all(np.isfinite(W0)) else None
    if norms is None or np.any(norms == 0):
      raise ValueError("W_fixed has non-finite entries or a zero row; allowed: finite rows of non-zero norm")
    W = jnp.asarray(W0 / norms[:, None], dtype)
  return SphericalProblem(Y=make_labels(counts, dtype), tau=tau_leaf, W_fixed=W, counts=counts, d=d,
                          constrained=bool(constrained))
