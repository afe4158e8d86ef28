r"""The UFM for multivariate regression and the neural-regression-collapse (NRC) metrics.

Andriopoulos, Dong, Guo, Zhao, Ross (NeurIPS 2024, "The Prevalence of Neural Collapse in Neural Multivariate
Regression", arXiv 2409.04180): targets :math:`y_i \in \mathbb R^n` (``Y``, ``n x N``; ``n`` is the target
dimension, the paper's name, not a class size), free features :math:`H` (``d x N``), a linear regressor
:math:`W` (``n x d``) and a bias :math:`b`:

.. math::
   f(W, H, b) = \frac1{2N}\|WH + b\mathbf 1^\top - Y\|_F^2 + \frac{\lambda_W}{2}\|W\|_F^2
   + \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|^2

(ufm's normalisation: the feature decay on the sum of squares, as in :mod:`ufm.objectives`; a per-sample decay
:math:`\frac{\lambda'_H}{2N}\|H\|_F^2` is :math:`\lambda_H = \lambda'_H/N`). NRC metrics (the paper's
definitions, computed on the centred features :math:`\tilde h_i = h_i - h_G`):

* :func:`nrc1`: the fraction of :math:`\sum_i\|\tilde h_i\|^2` outside the span of the top ``n`` principal
  components of the features;
* :func:`nrc2`: the fraction outside the row space of ``W``;
* :func:`nrc3`: :math:`\|\frac{WW^\top}{\|WW^\top\|_F} - \frac{(\Sigma^{1/2} - \sqrt\gamma I)_+}
  {\|(\Sigma^{1/2} - \sqrt\gamma I)_+\|_F}\|_F^2` with :math:`\Sigma` the target covariance and :math:`\gamma`
  the theory's constant (:func:`ufm.theory.regression_minimiser`).

A :class:`RegressionProblem` follows the :class:`ufm.problem.Family` protocol (``FAMILY = "regression"``), so the
solvers, :func:`ufm.verdict.multistart` and :func:`ufm.sweep.sweep` (axes ``lam_W``, ``lam_H``, ``lam_b``) take it.
"""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from ufm.problem import Params, check_solve_memory
from ufm.validate import cast_checked, check_bias, check_dtype, check_int, check_real

__all__ = ["RegressionProblem", "make_regression_problem", "nrc1", "nrc2", "nrc3", "nrc_metrics",
           "random_targets", "target_covariance"]


@struct.dataclass
class RegressionProblem:
  """One regression UFM instance (objective in the module docstring).

  Attributes:
    Y: targets, ``n x N`` (array leaf; a batch of target sets is not swept, the weight decays are).
    lam_W, lam_H, lam_b: weight decays (scalar array leaves).
    d: feature dimension (static). bias: whether the regressor has a bias ``b`` (static).
  """
  Y: Any
  lam_W: Any
  lam_H: Any
  lam_b: Any
  d: int = struct.field(pytree_node=False)
  bias: bool = struct.field(pytree_node=False, default=True)
  loss: str = struct.field(pytree_node=False, default="mse")

  FAMILY: ClassVar[str] = "regression"
  SCALAR_LEAVES: ClassVar[tuple[str, ...]] = ("lam_W", "lam_H", "lam_b")

  @property
  def K(self) -> int:
    """The output dimension ``n`` (rows of ``W``; named ``K`` for the solvers' shape checks)."""
    return self.Y.shape[-2]

  @property
  def n_targets(self) -> int:
    """The target dimension ``n`` of the paper."""
    return self.Y.shape[-2]

  @property
  def N(self) -> int:
    return self.Y.shape[-1]

  @property
  def dtype(self):
    return self.Y.dtype

  @property
  def constrained(self) -> bool:
    return False

  def project(self, params):
    """The identity (no constraint)."""
    return params

  def value(self, params: Params) -> jax.Array:
    """The objective of the module docstring."""
    R = params.W @ params.H - self.Y
    r = 0.5 * (self.lam_W * jnp.sum(params.W**2) + self.lam_H * jnp.sum(params.H**2))
    if self.bias:
      R = R + params.b[:, None]
      r = r + 0.5 * self.lam_b * jnp.sum(params.b**2)
    return 0.5 * jnp.sum(R**2) / self.N + r

  def init(self, key: jax.Array, init_scale) -> Params:
    r"""Gaussian :math:`W_{kj}, H_{ji} \sim \mathcal N(0, s^2)`, ``b = 0`` (keys as :func:`ufm.problem.init_params`)."""
    kW, kH = jax.random.split(key)
    dt = self.dtype
    s = jnp.asarray(init_scale, dt)
    return Params(W=s * jax.random.normal(kW, (self.K, self.d), dt), H=s * jax.random.normal(kH, (self.d, self.N), dt),
                  b=jnp.zeros((self.K,), dt))

  @property
  def METRICS(self) -> dict:
    """The NRC metrics (:data:`REGRESSION_METRICS`) for ``trace_metrics`` and :func:`ufm.metrics.compute`."""
    return REGRESSION_METRICS


def make_regression_problem(Y, *, d, lam_W, lam_H, lam_b=0.0, bias=True, dtype=None) -> RegressionProblem:
  """Builds and validates a :class:`RegressionProblem` from targets ``Y`` (``n x N``, finite, ``N >= 2``).

  Raises:
    ValueError: naming the parameter and its allowed range (``Y`` a finite 2-D array with ``n >= 1`` rows and
      ``N >= 2`` columns, ``d >= 1``, weight decays ``>= 0`` and finite, ``lam_b = 0`` without a bias).
  """
  dtype = check_dtype(dtype or jnp.result_type(float))
  Y = check_real("Y", Y)
  if Y.ndim != 2 or Y.shape[0] < 1 or Y.shape[1] < 2:
    raise ValueError(f"Y has shape {Y.shape}; allowed: a 2-D array n x N of targets with n >= 1 and N >= 2")
  d = check_int("d", d, lo=1)
  bias = check_bias(bias)
  check_solve_memory(Y.shape[0], Y.shape[1], d, dtype)
  lams = {k: check_real(k, v, lo=0.0) for k, v in (("lam_W", lam_W), ("lam_H", lam_H), ("lam_b", lam_b))}
  for k, v in lams.items():
    if v.ndim:
      raise ValueError(f"{k} has shape {v.shape}; allowed: one number >= 0 (sweep or vmap for a batch)")
  if not bias and lams["lam_b"] != 0:
    raise ValueError(f"lam_b = {float(lams['lam_b'])!r} has no effect without a bias; allowed: lam_b = 0 when "
                     "bias=False")
  return RegressionProblem(Y=cast_checked("Y", Y, dtype), d=d, bias=bias,
                           **{k: cast_checked(k, v, dtype) for k, v in lams.items()})


def random_targets(key: jax.Array, n: int, N: int, *, scales=None, dtype=None) -> jax.Array:
  r"""``n x N`` targets :math:`y_i = A z_i + \mu`, :math:`z_i \sim \mathcal N(0, I)`, with ``A`` a random rotation
  times ``diag(scales)`` (default ``1, 1/2, ..., 1/n``: distinct variances) and a random mean :math:`\mu`."""
  n, N = check_int("n", n, lo=1), check_int("N", N, lo=2)
  dt = dtype or jnp.result_type(float)
  scales = 1.0 / jnp.arange(1, n + 1, dtype=dt) if scales is None else jnp.asarray(scales, dt)
  k1, k2, k3 = jax.random.split(key, 3)
  Q, _ = jnp.linalg.qr(jax.random.normal(k1, (n, n), dt))
  return (Q * scales[None, :]) @ jax.random.normal(k2, (n, N), dt) + jax.random.normal(k3, (n, 1), dt)


def target_covariance(Y: ArrayLike, *, centred: bool = True) -> jax.Array:
  r""":math:`\Sigma = \frac1N\sum_i (y_i - \bar y)(y_i - \bar y)^\top` (``centred``; the second moment
  :math:`\frac1N YY^\top` otherwise, the relevant matrix without a bias)."""
  Y = jnp.asarray(Y)
  Yc = Y - jnp.mean(Y, axis=1, keepdims=True) if centred else Y
  return Yc @ Yc.T / Y.shape[1]


def _centred(H):
  return H - jnp.mean(H, axis=1, keepdims=True)


def _outside(Hc, P):
  r""":math:`\|(I - P)\tilde H\|_F^2/\|\tilde H\|_F^2` (NaN for zero features)."""
  tot = jnp.sum(Hc**2)
  res = jnp.sum((Hc - P @ Hc) ** 2)
  return jnp.where(tot > 0, res / jnp.where(tot > 0, tot, 1.0), jnp.nan)


def nrc1(H: ArrayLike, n: int) -> jax.Array:
  r"""NRC1 (Andriopoulos et al. 2024, arXiv 2409.04180): the fraction of the centred features' energy outside
  the span of their top ``n`` principal components, :math:`\|(I - P_n)\tilde H\|_F^2/\|\tilde H\|_F^2`."""
  Hc = _centred(jnp.asarray(H))
  U, _, _ = jnp.linalg.svd(Hc, full_matrices=False)
  Un = U[:, :n]
  return _outside(Hc, Un @ Un.T)


def nrc2(H: ArrayLike, W: ArrayLike) -> jax.Array:
  r"""NRC2 (Andriopoulos et al. 2024, arXiv 2409.04180): the fraction of the centred features' energy outside
  the row space of ``W`` (``n x d``), :math:`\|(I - P_W)\tilde H\|_F^2/\|\tilde H\|_F^2`,
  :math:`P_W = W^\top(WW^\top)^+W`."""
  W = jnp.asarray(W)
  P = W.T @ jnp.linalg.pinv(W @ W.T, hermitian=True) @ W
  return _outside(_centred(jnp.asarray(H)), P)


def nrc3(W: ArrayLike, Sigma: ArrayLike, gamma) -> jax.Array:
  r"""NRC3 (Andriopoulos et al. 2024, arXiv 2409.04180):
  :math:`\|\frac{WW^\top}{\|WW^\top\|_F} - \frac{A}{\|A\|_F}\|_F^2`, :math:`A = (\Sigma^{1/2} - \sqrt\gamma I)_+`
  (the positive part on the eigenvalues; the theory's :math:`\gamma` is
  :func:`ufm.theory.regression_minimiser`'s ``gamma``)."""
  W = jnp.asarray(W)
  evals, V = jnp.linalg.eigh(jnp.asarray(Sigma))
  A = (V * jnp.maximum(jnp.sqrt(jnp.maximum(evals, 0.0)) - jnp.sqrt(gamma), 0.0)[None, :]) @ V.T
  G = W @ W.T
  unit = lambda X: X / jnp.linalg.norm(X)
  return jnp.sum((unit(G) - unit(A)) ** 2)


def nrc_metrics(params, problem: RegressionProblem, gamma) -> dict:
  """``{"nrc1", "nrc2", "nrc3"}`` of ``params`` (:func:`nrc3` against the problem's target covariance, centred with
  a bias and the second moment without)."""
  Sigma = target_covariance(problem.Y, centred=problem.bias)
  return {"nrc1": nrc1(params.H, problem.n_targets), "nrc2": nrc2(params.H, params.W),
          "nrc3": nrc3(params.W, Sigma, gamma)}


def _gamma_of(problem):
  return problem.N * problem.lam_W * problem.lam_H


#: NRC metrics by name, ``(params, problem) -> value`` (NRC3 with the theory's gamma = N lam_W lam_H).
REGRESSION_METRICS = {
    "nrc1": lambda params, p: nrc1(params.H, p.n_targets),
    "nrc2": lambda params, p: nrc2(params.H, params.W),
    "nrc3": lambda params, p: nrc3(params.W, target_covariance(p.Y, centred=p.bias), _gamma_of(p)),
}
