r"""Closed forms of the UFM literature: the *expected* side of every test.

Every function is jittable (no sympy, no Python loops over classes). ``theory`` never
imports :mod:`ufm.solvers` (STYLE.md B.4): a prediction must not be computed by the
code it checks. :func:`predict` is the one Python-level entry point: it picks the closed
form that applies to a concrete :class:`~ufm.problem.Problem`, or raises
:class:`NoClosedFormError` saying why there is none.

Normalisation (all functions): the objective of :mod:`ufm.objectives`,
:math:`f = \frac1N\sum_i \ell(Wh_i + b, y_i) + \frac{\lambda_W}{2}\|W\|_F^2
+ \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|^2`, with
:math:`\ell_{MSE}(z,y) = \frac12\|z-y\|^2`.

Derivations that go beyond (or correct) ``THEORY.md`` are written out in the
docstrings of :func:`mse_minimiser` and :func:`ce_balanced`.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.problem import Problem, ProblemLike

__all__ = [
    "CEBalanced",
    "MSEMinimiser",
    "NoClosedFormError",
    "Prediction",
    "ce_balanced",
    "collapse_threshold",
    "etf_gram",
    "etf_target",
    "mse_minimiser",
    "orthogonal_frame",
    "predict",
    "random_orthonormal",
    "simplex_etf",
    "VicinityBasePoint",
    "VicinityMap",
    "contraction_map",
    "vicinity_base_point",
    "vicinity_linearised_map",
    "MixupFeature",
    "mixup_confidence",
    "mixup_kappa",
    "mixup_optimal_feature",
    "mixup_same_class_scale",
    # issue 8: deep linear UFM
    "DeepCE",
    "DeepMSEMinimiser",
    "deep_b",
    "deep_ce_block",
    "deep_ce_etf",
    "deep_class_objective",
    "deep_collapse_lambda",
    "deep_existence_ratio",
    "deep_largest_root",
    "deep_mse_minimiser",
    "deep_mse_nearest_minimiser",
    "deep_phi",
    "deep_threshold_ratio",
    "deep_x",
    "predict_deep",
    "ConfigurationMetrics",
    "cross_polytope",
    "cross_polytope_metrics",
    "regular_polygon",
    "regular_polygon_metrics",
    "riesz_energy_cross_polytope",
    "riesz_energy_regular_polygon",
    "riesz_energy_simplex",
    "simplex_metrics",
    "spherical_ce_collapsed",
]


class NoClosedFormError(ValueError):
  """Raised by :func:`predict` (and the constructors) when no closed form applies."""


# ----------------------------------------------------------------------------- frames


def random_orthonormal(key: jax.Array, d: int, r: int, dtype=None) -> jax.Array:
  """A Haar-random ``d x r`` matrix with orthonormal columns (``r <= d``), by QR with sign fix."""
  if r > d:
    raise ValueError(f"r = {r} is out of range; allowed range: r <= d = {d}")
  A = jax.random.normal(key, (d, r), dtype or jnp.result_type(float))
  Q, R = jnp.linalg.qr(A)
  return Q * jnp.sign(jnp.diagonal(R))[None, :]


def _embedding(key, d: int, r: int, dtype) -> jax.Array:
  if key is None:
    return jnp.eye(d, r, dtype=dtype)
  return random_orthonormal(key, d, r, dtype)


def _check_K(K, lo=2):
  if not isinstance(K, (int, np.integer)) or isinstance(K, bool) or K < lo:
    raise ValueError(f"K = {K!r} is out of range; allowed range: integers >= {lo}")


def etf_gram(K: int, dtype=None) -> jax.Array:
  r"""Gram matrix of the unit-norm simplex ETF: :math:`\frac{K}{K-1}(I_K - \frac1K \mathbf 1\mathbf 1^\top)`.

  Unit diagonal, off-diagonal :math:`-1/(K-1)` (Papyan, Han, Donoho 2020, Def. of NC2).
  """
  _check_K(K)
  dtype = dtype or jnp.result_type(float)
  return (K / (K - 1)) * (jnp.eye(K, dtype=dtype) - jnp.full((K, K), 1.0 / K, dtype))


def etf_target(K: int, dtype=None) -> jax.Array:
  r"""Frobenius-normalised ETF Gram :math:`E = (I_K - \frac1K\mathbf 1\mathbf 1^\top)/\sqrt{K-1}` (THEORY.md §0.2)."""
  return etf_gram(K, dtype) * ((K - 1) / K) / math.sqrt(K - 1)


def simplex_etf(K: int, d: int | None = None, *, key: jax.Array | None = None, dtype=None) -> jax.Array:
  r"""A unit-norm simplex ETF as the columns of a ``d x K`` matrix.

  .. math:: M = \sqrt{\tfrac{K}{K-1}}\; P\, B^\top, \qquad M^\top M = \tfrac{K}{K-1}\big(I_K - \tfrac1K \mathbf 1\mathbf 1^\top\big),

  where :math:`B` (``K x (K-1)``) is the Helmert orthonormal basis of
  :math:`\mathbf 1^\perp` and :math:`P` (``d x (K-1)``) has orthonormal columns: the
  first ``K-1`` coordinate axes when ``key`` is None, a Haar-random embedding otherwise.
  Needs ``d >= K - 1`` (Papyan, Han, Donoho 2020, arXiv 2008.08186, Def. 1).
  """
  _check_K(K)
  d = K - 1 if d is None else d
  if d < K - 1:
    raise NoClosedFormError(f"d = {d} is out of range for a simplex ETF of K = {K} vectors; "
                            f"allowed range: d >= K-1 = {K - 1}")
  dtype = dtype or jnp.result_type(float)
  j = np.arange(1, K)
  B = np.zeros((K, K - 1))
  for col, jj in enumerate(j):  # Helmert basis: a constant-size NumPy constant, not traced.
    B[:jj, col] = 1.0
    B[jj, col] = -jj
    B[:, col] /= math.sqrt(jj * (jj + 1))
  M0 = math.sqrt(K / (K - 1)) * jnp.asarray(B.T, dtype)  # (K-1) x K
  return _embedding(key, d, K - 1, dtype) @ M0


def orthogonal_frame(K: int, d: int | None = None, *, key: jax.Array | None = None, dtype=None) -> jax.Array:
  r"""``K`` orthonormal vectors as the columns of a ``d x K`` matrix (:math:`M^\top M = I_K`); needs ``d >= K``.

  The orthogonal-frame geometry of the bias-free MSE-UFM (Tirer & Bruna 2022,
  arXiv 2202.08087; Dang et al. 2023, arXiv 2301.00437; theorem numbers unverified, THEORY.md §5.4, §1.2).
  """
  _check_K(K, lo=1)
  d = K if d is None else d
  if d < K:
    raise NoClosedFormError(f"d = {d} is out of range for an orthogonal frame of K = {K} vectors; "
                            f"allowed range: d >= K = {K}")
  return _embedding(key, d, K, dtype or jnp.result_type(float))


# ------------------------------------------------------------------ balanced CE


def collapse_threshold(K: int, n, lam_W, lam_H) -> jax.Array:
  r"""The balanced collapse-to-zero index :math:`\tau = K\sqrt{n\lambda_W\lambda_H}`.

  For the balanced CE-UFM (Zhu et al. 2021, arXiv 2105.02375, Thm. 3.1 with the norm
  reduction of :func:`ce_balanced`) and the balanced MSE-UFM with or without an
  unregularised bias (:func:`mse_minimiser`), the global minimiser is ``W = 0, H = 0``
  iff :math:`\tau \ge 1` (derived in those functions; THEORY.md §5.1, §1.2).
  """
  return K * jnp.sqrt(n * lam_W * lam_H)


class CEBalanced(NamedTuple):
  """Balanced CE-UFM minimiser: ``norm_w_sq = ||w_k||^2`` (every k), ``ratio = ||h_{k,i}|| / ||w_k||``."""
  norm_w_sq: jax.Array
  ratio: jax.Array
  objective: jax.Array


def ce_balanced(K: int, n, lam_W, lam_H) -> CEBalanced:
  r"""Global minimiser of the balanced CE-UFM (Zhu et al. 2021, arXiv 2105.02375, Thm. 3.1).

  At every global minimiser (``d >= K-1``) the rows of ``W`` form a simplex ETF of
  common norm :math:`a`, :math:`h_{k,i} = \rho\, w_k` with
  :math:`\rho = \sqrt{\lambda_W/(n\lambda_H)}`, and ``b = 0`` when
  :math:`\lambda_b > 0` (``b`` is any multiple of :math:`\mathbf 1` when :math:`\lambda_b = 0`).

  *Norm (derived here; THEORY.md §5.1).* With :math:`t = a^2` the logit margin is
  :math:`\rho t \frac{K}{K-1}` and the regulariser is
  :math:`\frac{\lambda_W}{2}Kt + \frac{\lambda_H}{2}Kn\rho^2 t = K\lambda_W t`, so

  .. math::
     g(t) = \log\big(1 + (K-1)e^{-\beta t}\big) + K\lambda_W t,\quad
     \beta = \tfrac{K}{K-1}\rho,\qquad
     t^\star = \max\Big(0, \tfrac1\beta\log\frac{(K-1)(\beta - K\lambda_W)}{K\lambda_W}\Big).

  :math:`g` is convex, and :math:`t^\star > 0` iff :math:`K\sqrt{n\lambda_W\lambda_H} < 1`.
  The optimal value is :math:`f^\star = g(t^\star)` (``log K`` at the zero solution).
  """
  lam_W, lam_H = jnp.asarray(lam_W), jnp.asarray(lam_H)
  rho = jnp.sqrt(lam_W / (n * lam_H))
  beta = K / (K - 1) * rho
  arg = (K - 1) * (beta - K * lam_W) / (K * lam_W)
  t = jnp.where(arg > 1, jnp.log(jnp.where(arg > 1, arg, 1.0)) / beta, 0.0)
  f = jnp.log1p((K - 1) * jnp.exp(-beta * t)) + K * lam_W * t
  ok = (lam_W > 0) & (lam_H > 0)  # otherwise the infimum is not attained: NaN, not a wrong number
  nan = jnp.full_like(f, jnp.nan)
  return CEBalanced(norm_w_sq=jnp.where(ok, t, nan), ratio=jnp.where(ok, rho, nan), objective=jnp.where(ok, f, nan))


# ------------------------------------------------------------------ MSE, any counts


class MSEMinimiser(NamedTuple):
  r"""MSE-UFM minimiser in class-level form (all ``K x K`` Grams are rotation invariant).

  Attributes:
    gram_W: :math:`WW^\top`.
    gram_M: :math:`\bar H^\top \bar H` (uncentred class means).
    logits_M: :math:`W\bar H`.
    b: the bias (zeros without bias).
    h_G_sq: :math:`\|h_G\|^2`, the squared global feature mean.
    norm_W_sq, norm_H_sq, objective: :math:`\|W\|_F^2`, :math:`\|H\|_F^2`, :math:`f^\star`.
    singular_values: the active singular values :math:`z` of :math:`Z = WH` (centred block), descending.
    mean_singular_value: :math:`z_0`, the mean-direction block (non-zero only with a regularised bias).
    rank: number of non-zero singular values (``<= d`` when ``d`` is given).
    gains: objective decrease of each direction before the rank truncation (centred block, then
      the mean block when there is a bias); a tie at the ``d``-th place means the truncated
      minimiser is not unique.
  """
  gram_W: jax.Array
  gram_M: jax.Array
  logits_M: jax.Array
  b: jax.Array
  h_G_sq: jax.Array
  norm_W_sq: jax.Array
  norm_H_sq: jax.Array
  objective: jax.Array
  singular_values: jax.Array
  mean_singular_value: jax.Array
  rank: jax.Array
  gains: jax.Array


def mse_minimiser(counts, lam_W, lam_H, lam_b=0.0, *, bias: bool, d: int | None = None) -> MSEMinimiser:
  r"""Global minimiser of the MSE-UFM by nuclear-norm reduction (derived here).

  *Reduction.* For any ``Z`` of rank :math:`\le d`,
  :math:`\min_{WH=Z} \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
  = \sqrt{\lambda_W\lambda_H}\,\|Z\|_*` (AM–GM on singular values), attained at
  :math:`WW^\top = c^{-1}(ZZ^\top)^{1/2}`, :math:`H^\top H = c\,(Z^\top Z)^{1/2}`,
  :math:`c = \sqrt{\lambda_W/\lambda_H}`. So the bias-free problem is
  :math:`\min_Z \frac{1}{2N}\|Z - Y\|_F^2 + \sqrt{\lambda_W\lambda_H}\|Z\|_*`, solved by
  singular-value soft-thresholding at :math:`\mu = N\sqrt{\lambda_W\lambda_H}`:
  :math:`z_i = (\sigma_i - \mu)_+`; under ``rank <= d`` the problem stays separable over singular
  directions (von Neumann), so the ``d`` directions with the largest objective decrease are kept.
  Writing :math:`T = P Y = (P D^{1/2})(D^{-1/2}Y)` with :math:`D = \mathrm{diag}(n_k)` and
  :math:`D^{-1/2}Y` having orthonormal rows, everything reduces to the SVD
  :math:`PD^{1/2} = U\Sigma\tilde V^\top` (``K x K``):

  .. math::
     WW^\top = c^{-1} U\,\mathrm{diag}(z)\,U^\top,\quad
     \bar H^\top\bar H = c\,D^{-1/2}\tilde V\mathrm{diag}(z)\tilde V^\top D^{-1/2},\quad
     W\bar H = U\mathrm{diag}(z)\tilde V^\top D^{-1/2},

  :math:`f^\star = \sum_i \frac{(\sigma_i - z_i)^2}{2N} + \sqrt{\lambda_W\lambda_H}\, z_i`.

  * Bias-free: :math:`P = I`, :math:`\sigma_k = \sqrt{n_k}`, so
    :math:`\|w_k\|^2 = \sqrt{n_k\lambda_H/\lambda_W} - N\lambda_H` (clamped at 0):
    the general orthogonal frame of Dang et al. (2023, arXiv 2301.00437, at
    depth 1; THEORY.md §1.3), the orthogonal frame when balanced (Tirer & Bruna 2022).
  * Bias: write :math:`H = \tilde H + h_G\mathbf 1^\top`, :math:`\pi = (n_k/N)_k`. Then
    :math:`\frac{1}{2N}\|WH + b\mathbf 1^\top - Y\|^2 = \frac{1}{2N}\|W\tilde H - \tilde Y\|^2
    + \frac12\|Wh_G + b - \pi\|^2` with :math:`\tilde Y = (I - \pi\mathbf 1^\top)Y`, so
    :math:`P = I - \pi\mathbf 1^\top` and :math:`b = (\pi - Wh_G)/(1 + \lambda_b)`.
    With :math:`\lambda_b = 0`: :math:`h_G = 0`, :math:`b = \pi` (``1/K`` balanced: Zhou et
    al. 2022, arXiv 2203.01238), the centred block gives the simplex ETF when
    balanced, with the same threshold :math:`K\sqrt{n\lambda_W\lambda_H} < 1`.
  * Regularised bias, **balanced only** (``lam_b > 0``; derived here, not in THEORY.md):
    minimising over ``b`` leaves :math:`\frac{\gamma}{2}\|Wh_G - \pi\|^2`,
    :math:`\gamma = \lambda_b/(1+\lambda_b)`. When balanced, :math:`\pi \propto \mathbf 1`
    is orthogonal to the column space of :math:`\tilde Y`, so by pinching the problem
    splits into the centred block and a rank-one *mean block* with target singular
    value :math:`\sigma_0 = \sqrt N\|\pi\| = \sqrt n` and weight :math:`\gamma`:
    :math:`z_0 = (\sigma_0 - \mu/\gamma)_+`. So the features' global mean is **non-zero**
    (and :math:`W` leaves the ETF) once :math:`\lambda_b/(1+\lambda_b) > \sqrt{KN\lambda_W\lambda_H}`,
    which needs ``d >= K`` (``rank`` counts it). As ``lam_b -> inf`` the uncentred means tend to an
    orthogonal frame, as reported by arXiv 2606.00344 ("The role of class encoding in neural collapse"). Imbalanced with ``lam_b > 0`` does not
    split; it returns NaN and :func:`predict` refuses it.

  Args:
    counts: class counts (a NumPy/JAX integer vector or tuple; ``K`` static).
    lam_W, lam_H, lam_b: weight decays (``lam_W, lam_H > 0``); may be traced.
    bias: static.
    d: feature dimension for the rank truncation; ``None`` means ``d >= K``.
  """
  n_K = jnp.asarray(counts, jnp.result_type(float))
  K = n_K.shape[0]
  N = jnp.sum(n_K)
  lam_W, lam_H, lam_b = (jnp.asarray(x, n_K.dtype) for x in (lam_W, lam_H, lam_b))
  pi = n_K / N
  sqrt_n = jnp.sqrt(n_K)
  eye = jnp.eye(K, dtype=n_K.dtype)
  P = eye - jnp.outer(pi, jnp.ones_like(pi)) if bias else eye
  U, sig, Vt = jnp.linalg.svd(P * sqrt_n[None, :])
  nu = jnp.sqrt(lam_W * lam_H)
  mu = N * nu
  z = jnp.maximum(sig - mu, 0.0)
  # Objective decrease bought by each active direction (centred block, then the mean block).
  gains = (sig**2 - (sig - z) ** 2) / (2 * N) - nu * z
  zero = jnp.zeros((), n_K.dtype)
  z0 = gamma = sigma0 = zero
  if bias:
    gamma = lam_b / (1.0 + lam_b)
    sigma0 = jnp.sqrt(N) * jnp.linalg.norm(pi)
    z0 = jnp.where(gamma > 0, jnp.maximum(sigma0 - mu / jnp.where(gamma > 0, gamma, 1.0), 0.0), 0.0)
    balanced_or_free = jnp.logical_or(lam_b == 0, jnp.all(n_K == n_K[0]))
    z0 = jnp.where(balanced_or_free, z0, jnp.nan)
    gains = jnp.append(gains, gamma * (sigma0**2 - (sigma0 - z0) ** 2) / (2 * N) - nu * z0)
  if d is not None:  # rank <= d: keep the d directions with the largest gains (separable scalar problems)
    position = jnp.zeros(gains.shape[0], jnp.int32).at[jnp.argsort(-gains)].set(
        jnp.arange(gains.shape[0], dtype=jnp.int32))
    keep = position < d
    z = jnp.where(keep[:K], z, 0.0)
    if bias:
      z0 = jnp.where(keep[K], z0, 0.0)
  c = jnp.sqrt(lam_W / lam_H)
  objective = jnp.sum((sig - z) ** 2) / (2 * N) + nu * jnp.sum(z)
  gram_W = (U * z[None, :]) @ U.T / c
  Vd = Vt / sqrt_n[None, :]  # V~^T D^{-1/2}
  gram_M = c * (Vd.T * z[None, :]) @ Vd
  logits_M = (U * z[None, :]) @ Vd
  h_G_sq, b = zero, jnp.zeros((K,), n_K.dtype)
  if bias:
    u0 = pi / jnp.linalg.norm(pi)
    Wh_G = z0 * u0 / jnp.sqrt(N)
    h_G_sq = c * z0 / N
    gram_W = gram_W + (z0 / c) * jnp.outer(u0, u0)
    gram_M = gram_M + h_G_sq
    logits_M = logits_M + Wh_G[:, None]
    b = (pi - Wh_G) / (1.0 + lam_b)
    objective = objective + gamma * (sigma0 - z0) ** 2 / (2 * N) + nu * z0
  norm_W_sq = (jnp.sum(z) + z0) / c
  norm_H_sq = c * (jnp.sum(z) + z0)
  rank = jnp.sum(z > 0) + (z0 > 0)
  return MSEMinimiser(gram_W=gram_W, gram_M=gram_M, logits_M=logits_M, b=b, h_G_sq=h_G_sq,
                      norm_W_sq=norm_W_sq, norm_H_sq=norm_H_sq, objective=objective,
                      singular_values=z, mean_singular_value=z0, rank=rank, gains=gains)


# ---------------------------------------------------------------------- predict


class Prediction(NamedTuple):
  """What :func:`predict` returns; ``nan`` marks a quantity the theory leaves undetermined.

  Attributes:
    geometry: ``"simplex ETF"``, ``"orthogonal frame"``, ``"general orthogonal frame"``,
      ``"ETF + mean direction"`` or ``"zero"``.
    source: paper and theorem.
    objective, norm_W_sq, norm_H_sq, norm_b: predicted values.
    gram_W, gram_M, logits_M: :math:`WW^\top`, :math:`\bar H^\top\bar H`, :math:`W\bar H` (``K x K``).
    b: predicted bias (``nan`` entries where only ``b ∝ 1`` is known).
    metrics: NC metric name -> value that the closed form fixes exactly (see
      :mod:`ufm.metrics`; metrics it does not fix are absent).
  """
  geometry: str
  source: str
  objective: float
  norm_W_sq: float
  norm_H_sq: float
  norm_b: float
  gram_W: np.ndarray
  gram_M: np.ndarray
  logits_M: np.ndarray
  b: np.ndarray
  metrics: dict


def _scalar(problem: Problem, name: str) -> float:
  v = np.asarray(getattr(problem, name))
  if v.ndim:
    raise ValueError(f"{name} has shape {v.shape}; predict takes one problem (scalar weight decays). "
                     "For a batch, vmap ufm.theory.ce_balanced / mse_minimiser instead.")
  return float(v)


def _etf_error_of_orthogonal_frame(K: int) -> float:
  r""":math:`\|I/\sqrt K - (I - J/K)/\sqrt{K-1}\|_F`: the ETF error of an orthogonal frame (exact)."""
  a, bb = 1 / math.sqrt(K), 1 / math.sqrt(K - 1)
  diag = a - bb + bb / K
  return math.sqrt(K * diag**2 + K * (K - 1) * (bb / K) ** 2)


def _balanced_targets(K: int, *, etf_W: bool, orthogonal_W: bool) -> dict:
  """Metric values fixed by a balanced, collapsed, non-zero minimiser (exact)."""
  m = {"nc1": 0.0, "nc1_ratio": 0.0, "cdnv": 0.0, "equinorm_W": 0.0, "equinorm_M": 0.0,
       "equiangularity_M": 0.0, "max_angle_M": 0.0, "etf_error_M": 0.0,
       "gnc2": -0.5 * math.log(2 * K / (K - 1)), "gnc2_var": 0.0, "unc3": 0.0, "nc4": 1.0,
       "self_duality_etf": 0.0}
  if etf_W:
    m.update(equiangularity_W=0.0, max_angle_W=0.0, etf_error_W=0.0, self_duality=0.0,
             self_duality_classwise=0.0)
  if orthogonal_W:
    # Uncentred means h_k ∝ w_k, orthonormal up to scale; the centred means are an ETF.
    dual = math.sqrt(2 - 2 * math.sqrt((K - 1) / K))
    m.update(equiangularity_W=0.0, max_angle_W=1 / (K - 1), of_error_W=0.0, of_error_M=0.0,
             etf_error_W=_etf_error_of_orthogonal_frame(K), self_duality=dual,
             self_duality_classwise=dual)
  return m


def predict(problem: "Problem | ProblemLike") -> Prediction:
  """The closed-form global minimiser of a concrete problem, or :class:`NoClosedFormError`.

  Covered: balanced CE (bias-free, or with bias), ``d >= K-1`` (:func:`ce_balanced`);
  MSE bias-free with any counts, MSE with an unregularised bias and any counts, MSE with
  a regularised bias when balanced (:func:`mse_minimiser`), including ``d`` below the
  unconstrained rank when the kept directions are unique.

  Not covered (raises): imbalanced CE (no closed form; SELI is a ``lambda -> 0`` limit),
  ``lam_W = 0`` or ``lam_H = 0`` (no minimiser is attained), ETF predictions with
  ``d < K-1``, rank truncations with tied directions.

  Values are computed in JAX's default float: enable ``jax_enable_x64`` for
  reference-precision predictions.
  """
  if hasattr(problem, "widths"):  # a deep linear UFM (ufm.deep.DeepProblem), any depth
    return predict_deep(problem)
  K, counts, d = problem.K, problem.counts, problem.d
  lam_W, lam_H, lam_b = (_scalar(problem, k) for k in ("lam_W", "lam_H", "lam_b"))
  if lam_W <= 0 or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W:g}, lam_H = {lam_H:g}: the UFM has a closed-form minimiser "
                            "only for lam_W > 0 and lam_H > 0 (otherwise the infimum is not attained)")
  lam_b_eff = lam_b if problem.bias else 0.0
  if problem.loss == "ce":
    if not problem.balanced:
      raise NoClosedFormError(f"counts = {counts}: the imbalanced CE-UFM has no closed form "
                              "(minority collapse / SELI are limits; see issue on imbalanced CE)")
    if d < K - 1:
      raise NoClosedFormError(f"d = {d} < K-1 = {K - 1}: a simplex ETF does not exist (the K > d+1 regime "
                              "has no closed form here)")
    n = counts[0]
    sol = ce_balanced(K, n, lam_W, lam_H)
    t, rho, f = float(sol.norm_w_sq), float(sol.ratio), float(sol.objective)
    G = (K / (K - 1)) * (np.eye(K) - 1.0 / K)  # etf_gram in NumPy float64, whatever jax_enable_x64 says
    b_undetermined = problem.bias and lam_b == 0
    b = np.full(K, np.nan) if b_undetermined else np.zeros(K)
    alive = t > 0
    metrics = _balanced_targets(K, etf_W=True, orthogonal_W=False) if alive else {}
    if alive and not b_undetermined:
      metrics["bias_relation"] = 0.0
    return Prediction(
        geometry="simplex ETF" if alive else "zero",
        source="Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1; norm from the convex reduction in ufm.theory.ce_balanced",
        objective=f, norm_W_sq=K * t, norm_H_sq=problem.N * rho**2 * t,
        norm_b=float("nan") if b_undetermined else 0.0,
        gram_W=t * G, gram_M=rho**2 * t * G, logits_M=rho * t * G, b=b, metrics=metrics)

  if problem.bias and lam_b > 0 and not problem.balanced:
    raise NoClosedFormError(f"lam_b = {lam_b:g} > 0 with imbalanced counts {counts}: the mean direction does "
                            "not decouple, no closed form (use lam_b = 0 or balanced counts)")
  free = mse_minimiser(counts, lam_W, lam_H, lam_b_eff, bias=problem.bias)
  rank = int(free.rank)
  truncated = rank > d
  if truncated:
    g = np.sort(np.asarray(free.gains, np.float64))[::-1]
    if g[d - 1] - g[d] <= 1e-12 * g[0]:
      raise NoClosedFormError(f"d = {d} is smaller than the rank {rank} of the unconstrained minimiser "
                              f"(counts {counts}) and directions tie at the cut, so the rank-{d} minimiser is "
                              f"not unique; allowed range for a prediction: d >= {rank}, or distinct gains")
  sol = jax.tree.map(lambda x: np.asarray(x, np.float64),
                     mse_minimiser(counts, lam_W, lam_H, lam_b_eff, bias=problem.bias, d=d))
  alive = sol.singular_values > 0
  z0 = float(sol.mean_singular_value)
  pi = np.asarray(counts, np.float64) / problem.N
  bias_rel = float(np.linalg.norm(sol.logits_M @ pi + sol.b))
  # With a bias the centred target has rank K-1 (its K-th singular value is 0).
  centred_alive = bool(alive[:K - 1].all()) if problem.bias else bool(alive.all())
  if not alive.any() and z0 == 0:
    geometry, metrics = "zero", {}
  elif truncated:
    geometry, metrics = f"rank-{d} truncation", {"nc1": 0.0}
  elif problem.balanced and centred_alive:
    if problem.bias:
      geometry = "simplex ETF" if z0 == 0 else "ETF + mean direction"
      metrics = _balanced_targets(K, etf_W=z0 == 0, orthogonal_W=False)
    else:
      geometry = "orthogonal frame"
      metrics = _balanced_targets(K, etf_W=False, orthogonal_W=True)
    metrics["bias_relation"] = bias_rel
  else:
    geometry = "general orthogonal frame" if not problem.bias else "imbalanced (centred SVD frame)"
    metrics = {"nc1": 0.0, "nc1_ratio": 0.0, "bias_relation": bias_rel}
    if not problem.bias and alive.all():  # W W^T diagonal: mutually orthogonal classifiers
      metrics.update(equiangularity_W=0.0, max_angle_W=1 / (K - 1))
  if problem.bias:
    source = ("Zhou et al. 2022 (arXiv 2203.01238); lam_b > 0 and imbalanced counts derived in "
              "ufm.theory.mse_minimiser (nuclear-norm reduction)")
  else:
    source = ("Tirer & Bruna 2022 (arXiv 2202.08087); Dang et al. 2023 (arXiv 2301.00437) at depth 1; "
              "constants from the nuclear-norm reduction in ufm.theory.mse_minimiser")
  return Prediction(geometry=geometry, source=source, objective=float(sol.objective),
                    norm_W_sq=float(sol.norm_W_sq), norm_H_sq=float(sol.norm_H_sq),
                    norm_b=float(np.linalg.norm(sol.b)), gram_W=sol.gram_W, gram_M=sol.gram_M,
                    logits_M=sol.logits_M, b=sol.b, metrics=metrics)


# ------------------------------------------------------------------ perturbation analysis (vicinity UFM)


class VicinityBasePoint(NamedTuple):
  """The collapsed minimiser of the ``beta = 0`` vicinity problem: ``W0`` (``K x d``), ``H0`` (``d x N``),
  the squared norms ``a2 = ||w_k||^2`` and ``b2 = ||hbar_k||^2``, ``c = sqrt(lam_H lam_W)`` and the value."""
  W0: jax.Array
  H0: jax.Array
  a2: float
  b2: float
  c: float
  objective: float


def vicinity_base_point(K: int, n: int, d: int, lam_W, lam_H, *, key: jax.Array | None = None,
                        dtype=None) -> VicinityBasePoint:
  r"""Global minimiser of the balanced, bias-free MSE vicinity UFM at :math:`\beta = 0` (paper
  normalisation, :mod:`ufm.vicinity`): an orthogonal frame repeated ``n`` times,

  .. math::
     \bar H_0 = b\,Q,\quad W_0 = a\,Q^\top,\quad b^2 = \sqrt{\lambda_W/\lambda_H} - \lambda_W,\quad
     a^2 = \sqrt{\lambda_H/\lambda_W} - \lambda_H,\quad W_0\bar H_0 = (1 - c) I_K,\quad
     f^\star = c - c^2/2,

  with :math:`c = \sqrt{\lambda_H\lambda_W} < 1` and :math:`Q^\top Q = I_K` (``d >= K``); the zero
  solution when :math:`c \ge 1`. It is a fixed point of :math:`H_0 \mapsto H^\star(H_0)` for every
  :math:`\beta` (Tirer, Huang, Niles-Weed 2023, arXiv 2210.16658, near-collapse setting; derived and
  checked in THEORY.md §10.1).
  """
  _check_K(K)
  if d < K:
    raise NoClosedFormError(f"d = {d} is out of range for the orthogonal-frame base point of K = {K}; "
                            f"allowed range: d >= K = {K}")
  lam_W, lam_H = float(lam_W), float(lam_H)
  if lam_W <= 0 or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W}, lam_H = {lam_H}: allowed range: both > 0")
  c = math.sqrt(lam_H * lam_W)
  b2 = max(0.0, math.sqrt(lam_W / lam_H) - lam_W)
  a2 = max(0.0, math.sqrt(lam_H / lam_W) - lam_H)
  Q = orthogonal_frame(K, d, key=key, dtype=dtype)
  Hbar = math.sqrt(b2) * Q
  labels = np.repeat(np.arange(K), n)
  f = c - c * c / 2 if c < 1 else 0.5
  return VicinityBasePoint(W0=math.sqrt(a2) * Q.T, H0=Hbar[:, labels], a2=a2, b2=b2, c=c, objective=f)


class VicinityMap(NamedTuple):
  r"""Singular values of the class blocks of :math:`F = dH^\star/dH_0` at the base point (exact, and the
  paper's first-order forms), with the within-class eigenvalues and the class-mean factor ``gamma``."""
  smax_kk: float
  smin_kk: float
  smax_cross: float
  smin_kk_first_order: float
  smax_cross_first_order: float
  within_row: float
  within_null: float
  gamma: float


def vicinity_linearised_map(lam_W, lam_H, beta) -> VicinityMap:
  r"""The near-collapse theorem of Tirer, Huang & Niles-Weed (2023, arXiv 2210.16658), exactly.

  At the base point of :func:`vicinity_base_point` (``d > K``, ``n >= 2``, :math:`c = \sqrt{\lambda_H
  \lambda_W} < 1`), the ``(dn) x (dn)`` class blocks of :math:`F = \beta(\beta I + Kn\nabla^2 L_0(H_0))^{-1}`
  have

  .. math::
     \sigma_{\max}(F_{kk}) = 1,\quad
     \sigma_{\min}(F_{kk}) = \frac{\beta}{\beta + \sqrt{\lambda_H/\lambda_W}}
       \;\big[\approx 1 - \beta^{-1}\sqrt{\lambda_H/\lambda_W}\big],\quad
     \sigma_{\max}(F_{k\tilde k}) = \frac{2\lambda_H(1-c)}{\beta + 4\lambda_H(1-c)}
       \;\big[\approx 2\beta^{-1}\lambda_H(1 - c)\big],

  the bracketed first-order forms being the paper's statements (error :math:`O(\beta^{-2})`).
  The within-class map :math:`A = \beta(W_0^\top W_0 + (\lambda_H + \beta)I)^{-1}` has eigenvalues
  ``within_row`` on the row space of ``W0`` and ``within_null`` on its null space; the class-mean map
  scales the symmetric in-span part by :math:`\gamma = \beta/(\beta + 4\lambda_H(1 - c))`
  (derived and checked in float64 in THEORY.md §10.2).
  """
  lam_W, lam_H, beta = float(lam_W), float(lam_H), float(beta)
  if lam_W <= 0 or lam_H <= 0 or beta <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W}, lam_H = {lam_H}, beta = {beta}: allowed range: all > 0")
  c = math.sqrt(lam_H * lam_W)
  if c >= 1:
    raise NoClosedFormError(f"sqrt(lam_H lam_W) = {c:g} >= 1: the base point is 0; allowed: lam_H lam_W < 1")
  r = math.sqrt(lam_H / lam_W)
  g = 4 * lam_H * (1 - c)
  return VicinityMap(smax_kk=1.0, smin_kk=beta / (beta + r), smax_cross=2 * lam_H * (1 - c) / (beta + g),
                     smin_kk_first_order=1 - r / beta, smax_cross_first_order=2 * lam_H * (1 - c) / beta,
                     within_row=beta / (beta + r), within_null=beta / (beta + lam_H), gamma=beta / (beta + g))


def contraction_map(W: jax.Array, lam_H, beta) -> jax.Array:
  r"""The within-class contraction :math:`A = \beta(W^\top W + (\lambda_H + \beta)I)^{-1}` (``d x d``):
  at any minimiser ``(W*, H*)`` of the MSE vicinity problem, :math:`\Sigma_W(H^\star) = A\,\Sigma_W(H_0)\,A`
  with ``A`` built from ``W*`` (Y is constant within a class), so :math:`0 \prec A \preceq
  \frac{\beta}{\beta + \lambda_H} I` and :math:`\mathrm{tr}\,\Sigma_W(H^\star) \le \mathrm{tr}\,\Sigma_W(H_0)`
  (Tirer et al. 2023; the ``lambda_H`` term derived in THEORY.md §10.5, correcting §3.3)."""
  d = W.shape[1]
  return beta * jnp.linalg.inv(W.T @ W + (lam_H + beta) * jnp.eye(d, dtype=W.dtype))


# ------------------------------------------------------------------ issue 5: mixup UFM with a fixed simplex-ETF classifier
#
# Fisher, Meng, Papyan (ICLR 2024), "Pushing Boundaries: Mixup's Influence on Neural Collapse", arXiv 2402.06171,
# Sec. 3 ("Unconstrained features model for mixup"). The paper's exact objective was not available to us (THEORY.md
# §2.1, §9.6); what follows is derived (THEORY.md §11 Part B) for the per-(pair, lambda) problem
#
#   g(h) = lam CE(W h, c) + (1 - lam) CE(W h, c') + (mu / 2) ||h||^2,
#
# W fixed, rows w_k of norm rho forming a simplex ETF; ``lam_H`` below is mu. :mod:`ufm.mixup` builds objectives whose
# per-node feature problem is exactly g with mu = lam_H.


class MixupFeature(NamedTuple):
  r"""The optimal mixed feature :math:`h^\star(\lambda) = a\,w_c + b\,w_{c'}` of a pair of classes ``c != c'``.

  Attributes:
    a, b: coefficients of :math:`w_c, w_{c'}` (for ``K = 2``, where :math:`w_{c'} = -w_c`, made unique by
      :math:`a + b = 0`).
    x, y: orthonormal coordinates on the plane of :math:`w_c, w_{c'}`: ``x`` along
      :math:`(w_c - w_{c'})/\|w_c - w_{c'}\|` (across the c/c' decision boundary, > 0 on the side of ``c``),
      ``y`` along :math:`(w_c + w_{c'})/\|w_c + w_{c'}\|` (along the boundary; 0 for ``K = 2``).
    logit_c, logit_c2, logit_other: :math:`z_c, z_{c'}` and the common logit of each of the ``K - 2`` other classes.
    prob_c, prob_c2, prob_other: softmax probabilities (``prob_other`` per other class; 0 for ``K = 2``).
    confidence: the largest softmax probability.
    grad_norm: the gradient norm of the reduced problem at the returned point (0 for the closed forms).
  """
  a: jax.Array
  b: jax.Array
  x: jax.Array
  y: jax.Array
  logit_c: jax.Array
  logit_c2: jax.Array
  logit_other: jax.Array
  prob_c: jax.Array
  prob_c2: jax.Array
  prob_other: jax.Array
  confidence: jax.Array
  grad_norm: jax.Array


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_mixup_args(K, rho, lam_H, loss, lam=None):
  _check_K(K)
  if loss not in ("ce", "mse"):
    raise ValueError(f"loss = {loss!r} is not supported; allowed values: ce, mse")
  for name, v, lo_ok in (("rho", rho, False), ("lam_H", lam_H, loss == "mse")):
    if _concrete(v):
      arr = np.asarray(v, np.float64)
      if not np.all(np.isfinite(arr)) or np.any(arr < 0) or (not lo_ok and np.any(arr == 0)):
        raise ValueError(f"{name} = {arr.tolist()!r} is out of range; allowed range: "
                         f"{name} {'>= 0' if lo_ok else '> 0'} (finite)")
  if lam is not None and _concrete(lam):
    arr = np.asarray(lam, np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 1):
      raise ValueError(f"lam = {arr.tolist()!r} is out of range; allowed range: 0 <= lam <= 1")


def mixup_kappa(K: int, *, lam_H, rho=1.0) -> jax.Array:
  r"""The one number the CE solution depends on: :math:`\kappa = \beta/\mu`, :math:`\beta = \rho^2 K/(K-1)`.

  :math:`WW^\top = \beta(I - \mathbf 1\mathbf 1^\top/K)` for ETF rows of norm :math:`\rho`, and stationarity of
  ``g`` gives the logits :math:`z = Wh = \kappa\,(y - p)` (THEORY.md §11 B.1). The logit margins
  :math:`u = z_c - z_o`, :math:`v = z_{c'} - z_o` and the probabilities depend on ``(K, kappa, lam)`` only; the
  coefficients are :math:`a = u/\beta`, :math:`b = v/\beta`.
  """
  return jnp.asarray(rho) ** 2 * K / ((K - 1) * jnp.asarray(lam_H))


def _same_class_margin(K: int, kappa):
  # u (e^u + K - 1) = kappa K: increasing and convex in u >= 0, so Newton from the upper bound log(1 + kappa K)
  # (f(log(1+x)) >= 0 since log(1+x) >= x/(x+K)) decreases monotonically and converges quadratically.
  u0 = jnp.log1p(kappa * K)

  def step(u, _):
    f = u * (jnp.exp(u) + K - 1) - kappa * K
    df = jnp.exp(u) * (1 + u) + K - 1
    return jnp.maximum(u - f / df, 0.0), None

  u, _ = jax.lax.scan(step, u0, None, length=100)
  return u


def mixup_same_class_scale(K: int, *, lam_H, rho=1.0) -> jax.Array:
  r"""Same-class mixes (``c = c'``): :math:`h^\star = a\,w_c` for every :math:`\lambda` (cross-entropy).

  For ``c = c'`` the mixup loss is :math:`\mathrm{CE}(Wh, c)` whatever :math:`\lambda`, so the optimum does not depend
  on :math:`\lambda` (the paper's "same-class features align with the classifier", Fisher et al. 2024, arXiv
  2402.06171, Sec. 3; THEORY.md §9.6). By the ETF symmetry :math:`h = a w_c`, and with the margin
  :math:`u = \beta a` (:func:`mixup_kappa`) stationarity reads (THEORY.md §11 B.1)

  .. math:: u\,(e^{u} + K - 1) = \kappa K, \qquad a = u/\beta,

  a generalised ("r-") Lambert-W equation, solved here by monotone Newton iterations (100, fixed, vmappable).
  This is also the optimal feature of the plain bias-free CE-UFM with this fixed classifier and per-sample
  feature decay :math:`\mu` = ``lam_H``.
  """
  _check_mixup_args(K, rho, lam_H, "ce")
  dt = jnp.result_type(float)
  return _same_class_scale(jnp.asarray(lam_H, dt), jnp.asarray(rho, dt), K=int(K))


@functools.partial(jax.jit, static_argnames=("K",))
def _same_class_scale(lam_H, rho, *, K: int):
  kappa = mixup_kappa(K, lam_H=lam_H, rho=rho)
  return _same_class_margin(K, kappa) / (rho**2 * K / (K - 1))


def _reduced_value_grad_hess(uv, lam, K, kappa):
  """G(u, v) of :func:`mixup_optimal_feature`, its gradient and Hessian (pure jnp, any leading axes)."""
  u, v = uv[..., 0], uv[..., 1]
  c0 = (K - 1) / (2 * K * kappa)
  m = jnp.maximum(jnp.maximum(u, v), 0.0)
  eu, ev, eo = jnp.exp(u - m), jnp.exp(v - m), (K - 2) * jnp.exp(-m)
  S = eu + ev + eo
  pc, pc2 = eu / S, ev / S
  q = u**2 + v**2 - 2 * u * v / (K - 1)
  G = jnp.log(S) + m - lam * u - (1 - lam) * v + c0 * q
  gu = pc - lam + 2 * c0 * (u - v / (K - 1))
  gv = pc2 - (1 - lam) + 2 * c0 * (v - u / (K - 1))
  huu = pc * (1 - pc) + 2 * c0
  hvv = pc2 * (1 - pc2) + 2 * c0
  huv = -pc * pc2 - 2 * c0 / (K - 1)
  if K == 2:  # G depends on u - v only (w_c' = -w_c): pin u + v = 0 with (u + v)^2 / 2, zero at the solution
    G = G + 0.5 * (u + v) ** 2
    gu, gv = gu + (u + v), gv + (u + v)
    huu, hvv, huv = huu + 1, hvv + 1, huv + 1
  return G, jnp.stack([gu, gv], -1), (huu, hvv, huv)


def _reduced_newton(lam, K: int, kappa, num_iters: int = 80):
  """Damped Newton (Armijo backtracking over 2^-j, j = 0..30, evaluated at once) on the strictly convex G."""
  lam, kappa = jnp.broadcast_arrays(jnp.asarray(lam), jnp.asarray(kappa))
  uv0 = jnp.zeros(lam.shape + (2,), lam.dtype)
  ts = (0.5 ** jnp.arange(31, dtype=lam.dtype)).reshape((1,) * lam.ndim + (31,))  # [..., t]

  def step(uv, _):
    G, g, (huu, hvv, huv) = _reduced_value_grad_hess(uv, lam, K, kappa)
    det = huu * hvv - huv**2
    du = -(hvv * g[..., 0] - huv * g[..., 1]) / det
    dv = -(huu * g[..., 1] - huv * g[..., 0]) / det
    d = jnp.stack([du, dv], -1)
    slope = jnp.sum(g * d, -1)
    cand = uv[..., None, :] + ts[..., None] * d[..., None, :]  # [..., t, 2]
    Gc = _reduced_value_grad_hess(cand, lam[..., None], K, kappa[..., None])[0]
    ok = (Gc <= G[..., None] + 1e-4 * ts * slope[..., None]) & (Gc < G[..., None])  # strict: rounding is no decrease
    t = jnp.where(jnp.any(ok, -1), 0.5 ** jnp.argmax(ok, -1).astype(lam.dtype), 0.0)
    # Once the decrease of G is below ulp(G), Armijo cannot see it: in the local regime (|grad|^2 < eps^(3/4),
    # 1.8e-12 in float64) take the full Newton step whenever it lowers the gradient norm.
    g_full = _reduced_value_grad_hess(uv + d, lam, K, kappa)[1]
    gn2 = jnp.sum(g**2, -1)
    t = jnp.where((jnp.sum(g_full**2, -1) < gn2) & (gn2 < jnp.finfo(lam.dtype).eps ** 0.75), 1.0, t)
    return uv + t[..., None] * d, None

  uv, _ = jax.lax.scan(step, uv0, None, length=num_iters)
  _, g, _ = _reduced_value_grad_hess(uv, lam, K, kappa)
  return uv[..., 0], uv[..., 1], jnp.sqrt(jnp.sum(g**2, -1))


def _feature_from_coefficients(a, b, K: int, rho, grad_norm) -> MixupFeature:
  rho = jnp.asarray(rho)
  if K == 2:  # canonical representation a + b = 0 (w_c' = -w_c)
    a, b = (a - b) / 2, (b - a) / 2
  r2 = rho**2
  z_c, z_c2, z_o = r2 * (a - b / (K - 1)), r2 * (b - a / (K - 1)), -r2 * (a + b) / (K - 1)
  m = jnp.maximum(z_c, z_c2)
  if K > 2:
    m = jnp.maximum(m, z_o)
  ec, ec2, eo = jnp.exp(z_c - m), jnp.exp(z_c2 - m), jnp.exp(z_o - m)
  S = ec + ec2 + (K - 2) * eo
  pc, pc2 = ec / S, ec2 / S
  po = eo / S if K > 2 else jnp.zeros_like(pc)
  beta = r2 * K / (K - 1)
  x = beta * (a - b) / (rho * math.sqrt(2 * K / (K - 1)))
  y = rho * (a + b) * math.sqrt((K - 2) / (2 * (K - 1)))
  return MixupFeature(a=a, b=b, x=x, y=y, logit_c=z_c, logit_c2=z_c2, logit_other=z_o, prob_c=pc, prob_c2=pc2,
                      prob_other=po, confidence=jnp.maximum(jnp.maximum(pc, pc2), po), grad_norm=grad_norm)


def mixup_optimal_feature(lam, K: int, *, lam_H, rho=1.0, loss: str = "ce", mixup: bool = True) -> MixupFeature:
  r"""The UFM-optimal mixed feature of classes ``c != c'`` with a fixed simplex-ETF classifier, against ``lam``.

  Fisher, Meng, Papyan (ICLR 2024, arXiv 2402.06171), Sec. 3; derived in THEORY.md §2.3 and §11 Part B (the
  paper's exact objective was not available: see :mod:`ufm.mixup` for the objective and its mapping). For a
  pair ``(c, c')`` and mixing weight :math:`\lambda` the mixed feature solves

  .. math::
     \min_h\; \lambda\,\ell(Wh, e_c) + (1-\lambda)\,\ell(Wh, e_{c'}) + \frac{\mu}{2}\|h\|^2,\qquad \mu = \text{lam\_H},

  with ``W`` fixed (rows :math:`w_k`, :math:`\|w_k\| = \rho`, :math:`w_j^\top w_k = -\rho^2/(K-1)`).

  * **CE** (``loss="ce"``). :math:`h^\star \in \mathrm{span}\{w_c, w_{c'}\}` (the ``K - 2`` other classes are
    exchangeable, so their logits are equal), :math:`h^\star = a w_c + b w_{c'}` with
    :math:`(u, v) = \beta(a, b)`, :math:`\beta = \rho^2K/(K-1)`, minimising the reduced strictly convex problem

    .. math::
       G(u, v) = \log(e^u + e^v + K - 2) - \lambda u - (1-\lambda) v
                 + \frac{K-1}{2K\kappa}\Big(u^2 + v^2 - \frac{2uv}{K-1}\Big),\qquad \kappa = \beta/\mu,

    solved by damped Newton (80 iterations, vmappable over ``lam``, ``lam_H``, ``rho``). Properties:
    :math:`a(\lambda) = b(1-\lambda)` (swap symmetry), :math:`z_c = z_{c'}` at :math:`\lambda = 1/2` (the feature
    sits on the decision boundary), :math:`a(1) =` :func:`mixup_same_class_scale`, :math:`b(1) = 0`, and the curve
    :math:`(u+v)(e^u + e^v + K - 2) = \kappa K` does not depend on :math:`\lambda`. The path is *not* a segment:
    :math:`a + b` rises from :math:`a(1)` at the ends to its maximum at :math:`\lambda = 1/2` (the "channel along
    the decision boundary").
  * **MSE** (``loss="mse"``, :math:`\ell = \frac12\|z - y\|^2`). :math:`\lambda\ell(z, e_c) + (1-\lambda)\ell(z,
    e_{c'}) = \frac12\|z - y_\lambda\|^2 + \lambda(1-\lambda)` with :math:`y_\lambda = \lambda e_c + (1-\lambda)
    e_{c'}`, so :math:`h^\star = (W^\top W + \mu I)^{-1}W^\top y_\lambda = (\lambda w_c + (1-\lambda)w_{c'})/(\beta
    + \mu)`: exactly linear in :math:`\lambda` (``lam_H = 0`` allowed).
  * ``mixup=False``: the features of the plain (mixup-free) fixed-classifier UFM, linearly interpolated,
    :math:`h = \lambda h^\star_c + (1-\lambda) h^\star_{c'}` (what a model trained without mixup gives a
    mixed input if its features interpolate linearly): CE :math:`a = \lambda a^\star`, :math:`b = (1-\lambda)
    a^\star` with :math:`a^\star` = :func:`mixup_same_class_scale`; for MSE identical to ``mixup=True``.

  Args:
    lam: mixing weight(s) in ``[0, 1]``, any shape (the weight of class ``c``).
    K: number of classes (``>= 2``; static).
    lam_H: the feature decay :math:`\mu` (``> 0`` for CE, ``>= 0`` for MSE).
    rho: the norm of the classifier rows (``> 0``).
    loss: ``"ce"`` or ``"mse"`` (static).
    mixup: the mixup optimum (default) or the interpolated plain optimum (static).

  Returns:
    :class:`MixupFeature` with fields shaped like ``lam`` (broadcast with ``lam_H``, ``rho``).
  """
  _check_mixup_args(K, rho, lam_H, loss, lam)
  dt = jnp.result_type(float)
  return _mixup_feature(jnp.asarray(lam, dt), jnp.asarray(lam_H, dt), jnp.asarray(rho, dt), K=int(K), loss=loss,
                        mixup=bool(mixup))


@functools.partial(jax.jit, static_argnames=("K", "loss", "mixup"))
def _mixup_feature(lam, lam_H, rho, *, K: int, loss: str, mixup: bool) -> MixupFeature:
  lam, lam_H, rho = jnp.broadcast_arrays(lam, lam_H, rho)
  beta = rho**2 * K / (K - 1)
  zero = jnp.zeros_like(lam)
  if loss == "mse":
    return _feature_from_coefficients(lam / (beta + lam_H), (1 - lam) / (beta + lam_H), K, rho, zero)
  kappa = beta / lam_H
  if not mixup:
    a_star = _same_class_margin(K, kappa) / beta
    return _feature_from_coefficients(lam * a_star, (1 - lam) * a_star, K, rho, zero)
  u, v, gn = _reduced_newton(lam, K, kappa)
  return _feature_from_coefficients(u / beta, v / beta, K, rho, gn)


def mixup_confidence(lam, K: int, *, lam_H, rho=1.0, loss: str = "ce", mixup: bool = True) -> jax.Array:
  r"""Confidence (largest softmax probability of :math:`W h^\star(\lambda)`) of the optimal mixed feature of a pair
  ``c != c'`` against ``lam``: ``mixup_optimal_feature(...).confidence`` (same arguments).

  The calibration mechanism of Fisher et al. (2024, arXiv 2402.06171): with mixup CE the confidence falls from
  :math:`p^\star = e^{u^\star}/(e^{u^\star} + K - 1)` at :math:`\lambda \in \{0, 1\}` to its minimum at
  :math:`\lambda = 1/2`, where :math:`p_c = p_{c'} = e^{u}/(2e^{u} + K - 2)` with
  :math:`2u(2e^u + K - 2) = \kappa K` (THEORY.md §11 B.1); the interpolated plain-CE features
  (``mixup=False``) stay confident except near :math:`\lambda = 1/2`.
  """
  return mixup_optimal_feature(lam, K, lam_H=lam_H, rho=rho, loss=loss, mixup=mixup).confidence
# ------------------------------------------------------------------ issue 8: deep linear UFM
# Dang et al. 2023 (arXiv 2301.00437): balanced / imbalanced MSE at any depth; Garrod & Keating 2024
# (arXiv 2410.23169): balanced CE, the best ETF configuration against a lower-rank construction.
# Derivations: THEORY.md §1.2-§1.3, §9.1, §11 Part A, re-derived in the docstrings below.


def _geo_mean_lams(lam_W, M: int):
  """``(lam_bar, Lam_fn)``: the geometric mean of the layers' decays (``lam_W`` scalar or ``(M,)``)."""
  lam = jnp.broadcast_to(jnp.asarray(lam_W, jnp.result_type(float)), (M,))
  return jnp.exp(jnp.mean(jnp.log(lam))), lam


def deep_phi(x, M: int):
  r""":math:`\varphi_M(x) = M x^{M-1}/(x^M + 1)^2`, the right side of Dang et al.'s per-class equation
  :math:`b/n_k = \varphi_M(x)` (their ``compute_x``; THEORY.md §1.3)."""
  x = jnp.asarray(x, jnp.result_type(float))
  return M * x ** (M - 1) / (x**M + 1) ** 2


def deep_existence_ratio(M: int) -> float:
  r"""The largest :math:`b/n_k` for which :math:`b/n_k = \varphi_M(x)` has a root: for ``M = 1``,
  :math:`\varphi_1(0) = 1`; for ``M >= 2`` the maximum of :math:`\varphi_M` at
  :math:`x_*^M = (M-1)/(M+1)`, :math:`\varphi_M(x_*) = (M+1)^2 x_*^{M-1}/(4M)` (derived:
  :math:`\varphi_M' = 0 \iff (M-1)(x^M+1) = 2Mx^M`). Classes with a larger ratio have no root; Dang et al.'s
  code then calls ``max`` of an empty list (an exception), so it cannot run there."""
  _check_K(M, lo=1)
  if M == 1:
    return 1.0
  xs = ((M - 1) / (M + 1)) ** (1 / M)
  return (M + 1) ** 2 * xs ** (M - 1) / (4 * M)


def deep_threshold_ratio(M: int) -> float:
  r"""The *global* collapse threshold: class ``k`` has a non-zero optimum iff
  :math:`b/n_k < \rho_M = (M-1)^{(M-1)/M}/M` (``1`` for ``M = 1``).

  Derivation (here). With :math:`G(x) = n_k/(x^M+1) + b\,x` (``2N`` times the per-class objective, see
  :func:`deep_mse_minimiser`), :math:`G(0) = n_k`. At a stationary point :math:`b = n_k\varphi_M(x)`, so with
  :math:`y = x^M`, :math:`G(x) = n_k[1/(y+1) + My/(y+1)^2]`, which equals :math:`n_k` iff :math:`y = M - 1`.
  The non-zero root wins iff :math:`x_+^M > M - 1`, i.e. iff :math:`b/n_k < \varphi_M((M-1)^{1/M})
  = (M-1)^{(M-1)/M}/M`. For ``M >= 2`` this is *below* :func:`deep_existence_ratio` (``M = 2``: 0.5 vs 0.6495):
  between the two a non-zero local minimum exists but zero is the global one, and at the threshold the
  optimum jumps from :math:`x_+ = (M-1)^{1/M}` to 0 (a first-order transition)."""
  _check_K(M, lo=1)
  return 1.0 if M == 1 else (M - 1) ** ((M - 1) / M) / M


@functools.partial(jax.jit, static_argnames=("M", "iters"))
def deep_largest_root(ratio, M: int, *, iters: int = 200):
  r"""The largest root :math:`x_+` of :math:`\varphi_M(x) = \text{ratio}` (``NaN`` where none exists), by
  bisection; vmappable (``ratio`` may be traced, ``M`` static).

  :math:`\varphi_M` increases on :math:`[0, x_*]` and decreases on :math:`[x_*, \infty)`
  (:math:`x_*^M = (M-1)/(M+1)`, :math:`x_* = 0` for ``M = 1``), and :math:`\varphi_M(x) < M/x^{M+1}`, so
  :math:`x_+ \in [x_*, (M/\text{ratio})^{1/(M+1)}]` where :math:`\varphi_M` is monotone: the bracket halves
  ``iters`` times (200 reaches the float64 spacing). Dang et al.'s ``compute_x`` takes this root (sympy).
  """
  _check_K(M, lo=1)
  ratio = jnp.asarray(ratio, jnp.result_type(float))
  xs = ((M - 1) / (M + 1)) ** (1 / M)
  exists = (ratio > 0) & (ratio <= deep_existence_ratio(M))
  safe = jnp.where(exists, ratio, 1.0)
  lo = jnp.full_like(safe, xs)
  hi = jnp.maximum((M / safe) ** (1.0 / (M + 1)), lo)

  def body(_, lh):
    lo, hi = lh
    mid = 0.5 * (lo + hi)
    above = deep_phi(mid, M) > safe  # still left of the root
    return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

  lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
  x = 0.5 * (lo + hi)
  if M == 1:  # closed form x = ratio^{-1/2} - 1 (root of 1/(x+1)^2 = ratio); negative -> no positive root
    x = jax.lax.rsqrt(safe) - 1.0
    exists = exists & (x >= 0)
  return jnp.where(exists, x, jnp.nan)


def deep_class_objective(x, ratio, M: int):
  r""":math:`G(x)/n_k = 1/(x^M+1) + \text{ratio}\cdot x`, the per-class reduced objective (``2N/n_k`` times the
  objective of class ``k`` at :math:`s_k^{2M} = N\lambda_H x^M`, THEORY.md §1.3; :math:`G(0)/n_k = 1`)."""
  x = jnp.asarray(x, jnp.result_type(float))
  return 1.0 / (x**M + 1.0) + ratio * x


@functools.partial(jax.jit, static_argnames=("M", "rule"))
def deep_x(ratio, M: int, *, rule: str = "global"):
  r"""The per-class optimum :math:`x_k`: ``rule="global"`` takes the global minimiser of
  :func:`deep_class_objective` among :math:`\{0, x_+\}` (ties go to 0); ``rule="largest"`` is Dang et al.'s
  code: :math:`x_+` whenever it exists (0 otherwise), which is *wrong* for
  :math:`\rho_M \le b/n_k \le \varphi_M(x_*)` when ``M >= 2`` (see :func:`deep_threshold_ratio`)."""
  if rule not in ("global", "largest"):
    raise ValueError(f"rule = {rule!r}; allowed: 'global', 'largest'")
  xp = deep_largest_root(ratio, M)
  has = jnp.isfinite(xp)
  xp0 = jnp.where(has, xp, 0.0)
  if rule == "largest":
    return xp0
  better = deep_class_objective(xp0, ratio, M) < 1.0
  return jnp.where(has & better, xp0, 0.0)


def deep_b(N, M: int, lam_W, lam_H):
  r"""Dang et al.'s constant :math:`b = MN(N\bar\lambda_W^M\lambda_H)^{1/M}` with :math:`\bar\lambda_W` the
  geometric mean of the layers' decays (their code: one :math:`\lambda_W`; the geometric mean is the general
  case, derived in :func:`deep_mse_minimiser`)."""
  lam_bar, _ = _geo_mean_lams(lam_W, M)
  return M * N * lam_bar * (N * jnp.asarray(lam_H, lam_bar.dtype)) ** (1.0 / M)


class DeepMSEMinimiser(NamedTuple):
  r"""Global minimiser of the deep linear MSE-UFM in class-level form (everything up to rotations).

  Attributes:
    x: per-direction roots (Dang et al.'s ``x``), 0 for collapsed directions; ``ratio``: :math:`b/\sigma_i^2`.
    z: singular values of the logits :math:`Z` (``N`` columns), descending with the target's :math:`\sigma_i`.
    sigma: singular values of the (centred, with a bias) target.
    factor_singular_values: ``(M+1, K)``, those of ``H, W_1, ..., W_M`` in each direction.
    product_singular_values: of :math:`\bar W = W_M\cdots W_1` (``= s_k^M`` of Dang et al.).
    gram_W: :math:`\bar W\bar W^\top`; gram_M: :math:`\bar H^\top\bar H` (uncentred means of ``H``);
    logits_M: :math:`\bar W\bar H`;
    mean_grams: ``(M+1, K, K)``: uncentred class-mean Grams of :math:`H_1 = H, \dots, H_{M+1} = Z`;
    classifier_grams: ``(M, K, K)``: :math:`C_mC_m^\top`, :math:`C_m = W_M\cdots W_m`;
    b: the bias (``pi`` with an unregularised bias, else 0); objective; alive: non-zero directions.
    tied: directions exactly at the threshold (``M >= 2``, :math:`b/\sigma_i^2 = \rho_M` up to ``tie_rtol``),
      where 0 and :math:`x_+` give the same objective: there the minimiser is not unique
      (:func:`deep_mse_nearest_minimiser`).
  """
  x: jax.Array
  ratio: jax.Array
  z: jax.Array
  sigma: jax.Array
  factor_singular_values: jax.Array
  product_singular_values: jax.Array
  gram_W: jax.Array
  gram_M: jax.Array
  logits_M: jax.Array
  mean_grams: jax.Array
  classifier_grams: jax.Array
  b: jax.Array
  objective: jax.Array
  alive: jax.Array
  tied: jax.Array


# |G(x_+)/n_k - 1| below this counts as a tie of 0 and x_+: the objectives then differ by at most 1e-12
# relative, below what a float64 solve resolves, so either choice (and every mixture) is a global minimiser.
DEEP_TIE_RTOL = 1e-12


def deep_mse_minimiser(counts, lam_W, lam_H, *, M: int, bias: bool, rule: str = "global",
                       tie_rtol: float = DEEP_TIE_RTOL) -> DeepMSEMinimiser:
  r"""Global minimiser of the deep linear MSE-UFM (bias-free, or with an unregularised last-layer bias),
  any counts, any depth ``M``, widths :math:`\ge` the rank (derived here; Dang et al. 2023, arXiv 2301.00437:
  orthogonal frame / simplex ETF when balanced, the general orthogonal frame when imbalanced).

  *Reduction.* (i) NC1 is without loss: replacing :math:`H` by its class means lowers
  :math:`\|H\|_F` and (``Y`` constant within a class) not the loss. (ii) For a product of ``M+1``
  factors :math:`Z = W_M\cdots W_1H`, :math:`\min\sum_m\frac{\lambda_m}{2}\|W_m\|^2 + \frac{\lambda_H}{2}\|H\|^2
  = \frac{M+1}{2}\Lambda\sum_i\sigma_i(Z)^{2/(M+1)}`, :math:`\Lambda = (\lambda_H\prod_m\lambda_m)^{1/(M+1)}`
  (AM–GM on the singular values after rescaling each factor by :math:`\sqrt{\lambda}`), attained by the balanced
  factorisation (:func:`ufm.deep.balanced_factorisation`): each factor has singular values
  :math:`\sqrt{\Lambda/\lambda_j}\,z_i^{1/(M+1)}`. (iii) With a free bias the loss only sees the centred
  :math:`Z`, and centring lowers every singular value, so :math:`h_G = 0`, :math:`b = \pi`, target
  :math:`(I - \pi\mathbf 1^\top)Y`. (iv) The penalty is unitarily invariant, so (von Neumann) :math:`Z` shares
  the target's singular vectors; writing the target's class-level SVD as in :func:`mse_minimiser`
  (:math:`PD^{1/2} = U\Sigma\tilde V^\top`) each direction is the scalar problem
  :math:`g(z) = \frac{(z - \sigma_i)^2}{2N} + \frac{M+1}{2}\Lambda z^{2/(M+1)}`. Parametrising the product
  classifier's singular value by :math:`s^{2M} = N\lambda_Hx^M` (Dang et al.) and minimising the features in
  closed form gives :math:`2N g = \sigma_i^2/(x^M+1) + b\,x` with :math:`b` of :func:`deep_b`, stationary at
  :math:`b/\sigma_i^2 = \varphi_M(x)` (their equation with :math:`n_k = \sigma_i^2`), and
  :math:`z_i = \sigma_i x^M/(x^M+1)`. For ``M >= 2`` the penalty is concave and ``x = 0`` is always a local
  minimum: :func:`deep_x` picks the global one (``rule="global"``; at a tie, 0) or Dang et al.'s largest root.
  ``tied`` marks the directions at the threshold, where the set of global minimisers is larger than this one
  point: see :func:`deep_mse_nearest_minimiser`.

  Balanced, bias-free: all :math:`\sigma_i = \sqrt n`, an orthogonal frame. Balanced with a bias: ``K-1``
  directions :math:`\sqrt n` and one 0, a simplex ETF; both with the same threshold
  :math:`b/n < \rho_M` (:func:`deep_threshold_ratio`). ``M = 1`` reproduces :func:`mse_minimiser`.
  """
  _check_K(M, lo=1)
  if rule not in ("global", "largest"):
    raise ValueError(f"rule = {rule!r}; allowed: 'global', 'largest'")
  dt = jnp.result_type(float)
  return _deep_mse_impl(jnp.asarray(counts, dt), jnp.asarray(lam_W, dt), jnp.asarray(lam_H, dt), M=M, bias=bool(bias),
                        rule=rule, tie_rtol=float(tie_rtol), tie_alive=False)


def _deep_target_svd(n_K, bias):
  r"""SVD of the class-level target :math:`PD^{1/2} = U\Sigma\tilde V^\top` (``P`` centres with a bias)."""
  K = n_K.shape[0]
  pi = n_K / jnp.sum(n_K)
  eye = jnp.eye(K, dtype=n_K.dtype)
  P = eye - jnp.outer(pi, jnp.ones_like(pi)) if bias else eye
  return jnp.linalg.svd(P * jnp.sqrt(n_K)[None, :])


@functools.partial(jax.jit, static_argnames=("M", "bias", "rule", "tie_rtol", "tie_alive"))
def _deep_mse_impl(n_K, lam_W, lam_H, *, M, bias, rule, tie_rtol, tie_alive):
  K = n_K.shape[0]
  N = jnp.sum(n_K)
  lam_bar, lam = _geo_mean_lams(lam_W, M)
  lam_H = jnp.asarray(lam_H, n_K.dtype)
  Lam = jnp.exp((jnp.log(lam_H) + jnp.sum(jnp.log(lam))) / (M + 1))
  pi = n_K / N
  sqrt_n = jnp.sqrt(n_K)
  U, sig, Vt = _deep_target_svd(n_K, bias)
  b_const = deep_b(N, M, lam, lam_H)
  pos = sig > 1e-12 * jnp.max(sig)
  ratio = jnp.where(pos, b_const / jnp.where(pos, sig**2, 1.0), jnp.inf)
  safe_ratio = jnp.where(pos, ratio, 1.0)
  x = jnp.where(pos, deep_x(safe_ratio, M, rule=rule), 0.0)
  xp = deep_largest_root(safe_ratio, M)
  xp0 = jnp.where(jnp.isfinite(xp), xp, 0.0)
  tied = pos & (xp0 > 0) & (jnp.abs(deep_class_objective(xp0, safe_ratio, M) - 1.0) <= tie_rtol)
  if tie_alive:
    x = jnp.where(tied, xp0, x)
  z = sig * x**M / (x**M + 1.0)
  r = z ** (1.0 / (M + 1))
  lams_all = jnp.concatenate([lam_H[None], lam])  # H, W_1, ..., W_M
  factor = jnp.sqrt(Lam / lams_all)[:, None] * r[None, :]  # (M+1, K)
  feat = jnp.cumprod(factor, axis=0)  # singular values of H_1 = H, H_2 = W_1 H, ..., H_{M+1} = Z
  cls = jnp.cumprod(factor[1:][::-1], axis=0)[::-1]  # C_m = W_M ... W_m, m = 1..M
  prod_sv = cls[0]
  Vd = Vt / sqrt_n[None, :]
  mean_grams = jnp.einsum("ik,mi,il->mkl", Vd, feat**2, Vd)
  classifier_grams = jnp.einsum("ki,mi,li->mkl", U, cls**2, U)
  logits_M = (U * z[None, :]) @ Vd
  objective = jnp.sum((sig - z) ** 2) / (2 * N) + 0.5 * (M + 1) * Lam * jnp.sum(z ** (2.0 / (M + 1)))
  b = pi if bias else jnp.zeros((K,), n_K.dtype)
  return DeepMSEMinimiser(x=x, ratio=ratio, z=z, sigma=sig, factor_singular_values=factor,
                          product_singular_values=prod_sv, gram_W=classifier_grams[0], gram_M=mean_grams[0],
                          logits_M=logits_M, mean_grams=mean_grams, classifier_grams=classifier_grams, b=b,
                          objective=objective, alive=z > 0, tied=tied)


def deep_mse_nearest_minimiser(mean_grams, classifier_grams, counts, lam_W, lam_H, *, M: int, bias: bool,
                               tie_rtol: float = DEEP_TIE_RTOL) -> DeepMSEMinimiser:
  r"""The global minimiser of the deep linear MSE-UFM nearest to given class-mean and classifier Grams (of a
  solve), in the *set* of global minimisers; equal to :func:`deep_mse_minimiser` away from the threshold.

  *The set of global minimisers* (derived here, from the reduction in :func:`deep_mse_minimiser`). Up to the
  rotations of the factors the minimiser is fixed by its logits :math:`Z`, and each singular direction of the
  target solves its own scalar problem. Directions exactly at the threshold (``tied``: :math:`b/\sigma_i^2 =
  ho_M`, :func:`deep_threshold_ratio`, ``M >= 2``) have two global optima, :math:`z_i = 0` and
  :math:`z_i = \sigma_i x_+^M/(x_+^M + 1)` with :math:`x_+^M = M - 1`. All tied directions share one
  :math:`\sigma` (the ratio fixes it), so the target restricted to them is :math:`\sigma U_T V_T^	op`, and by
  von Neumann's trace inequality the optimal logits there are :math:`Z_T = z_+ U_T\,\Pi\,V_T^	op` for *any*
  orthogonal projection :math:`\Pi` on the tied coordinates (rank ``r`` = the number of tied directions kept,
  ``0..|T|``; the eigenvectors are free because the target's singular value is repeated). In the target's
  singular bases the layer-``m`` class-mean Gram is then :math:`\mathrm{diag}(f_{m,i}^2)` outside the tied
  block and :math:`f_{m,+}^2\Pi` inside it, and the classifier Gram likewise with the same :math:`\Pi`. The
  two points :func:`deep_mse_minimiser` can return (``rule="global"``: :math:`\Pi = 0`; every tied direction
  alive: :math:`\Pi = I`) are the extremes. Example: counts (8, 4, 2, 2), ``M = 2``, the two small classes at
  :math:`b/n_k = ho_2 = 1/2`: rank-1 :math:`\Pi` (a Gram block :math:`	frac14 uu^	op`, ``u`` any unit
  vector) is as good as 0 or :math:`	frac14 I`.

  *Nearest member.* :math:`\Pi` is the projection on the ``r`` leading eigenvectors of the layer-1 tied block
  (``r`` = its eigenvalues above half of :math:`f_{1,+}^2`), used for every layer and the classifiers.

  Args:
    mean_grams: ``(M+1, K, K)`` uncentred class-mean Grams of :math:`H_1, \dots, H_{M+1}` (of a solve).
    classifier_grams: ``(M, K, K)``: :math:`C_mC_m^	op`, :math:`C_m = W_M\cdots W_m`.
    counts, lam_W, lam_H, M, bias, tie_rtol: as for :func:`deep_mse_minimiser`.

  Returns:
    A :class:`DeepMSEMinimiser` of that member (``x``, ``z``, ``alive`` and the singular values with the ``r``
    kept tied directions alive; ``objective`` the global optimum).
  """
  _check_K(M, lo=1)
  dt = jnp.result_type(float)
  n_K = jnp.asarray(counts, dt)
  args = (n_K, jnp.asarray(lam_W, dt), jnp.asarray(lam_H, dt))
  kw = dict(M=M, bias=bool(bias), rule="global", tie_rtol=float(tie_rtol))
  dead, live = _deep_mse_impl(*args, **kw, tie_alive=False), _deep_mse_impl(*args, **kw, tie_alive=True)
  T = np.flatnonzero(np.asarray(dead.tied))
  if T.size == 0:
    return dead
  U, _, Vt = _deep_target_svd(n_K, bool(bias))
  sqrt_n = jnp.sqrt(n_K)
  A = Vt * sqrt_n[None, :]  # A G A^T = diag(f^2) for the representative's G = Vd^T diag(f^2) Vd, Vd = Vt / sqrt_n
  G = jnp.asarray(mean_grams, dt)
  C = jnp.asarray(classifier_grams, dt)
  feat2 = jnp.cumprod(live.factor_singular_values, axis=0) ** 2  # (M+1, K)
  B0 = (A @ G[0] @ A.T)[np.ix_(T, T)]
  evals, Q = jnp.linalg.eigh(B0)
  r = int(jnp.sum(evals > 0.5 * feat2[0, T[0]]))
  Qr = Q[:, Q.shape[1] - r:]
  Pi = Qr @ Qr.T
  K = n_K.shape[0]
  E = jnp.zeros((K, K), dt).at[np.ix_(T, T)].set(Pi)  # the projection, embedded in the tied coordinates
  off = jnp.ones((K,), dt).at[T].set(0.0)
  keep = np.zeros(K, bool)
  keep[T[:r]] = True  # which tied directions count as alive in x, z and the singular values
  pick = lambda a, b: jnp.where(jnp.asarray(keep), b, a)
  Vd = Vt / sqrt_n[None, :]
  D = jax.vmap(lambda f2: jnp.diag(f2 * off) + f2[T[0]] * E)(feat2)
  mean_star = jnp.einsum("ik,mij,jl->mkl", Vd, D, Vd)
  cls2 = jnp.cumprod(live.factor_singular_values[1:][::-1], axis=0)[::-1] ** 2  # (M, K)
  Dc = jax.vmap(lambda c2: jnp.diag(c2 * off) + c2[T[0]] * E)(cls2)
  cls_star = jnp.einsum("ki,mij,lj->mkl", U, Dc, U)
  Zs = jnp.diag(dead.z) + live.z[T[0]] * E
  logits = U @ Zs @ Vd
  return dead._replace(x=pick(dead.x, live.x), z=pick(dead.z, live.z),
                       factor_singular_values=pick(dead.factor_singular_values, live.factor_singular_values),
                       product_singular_values=pick(dead.product_singular_values, live.product_singular_values),
                       gram_W=cls_star[0], gram_M=mean_star[0], logits_M=logits, mean_grams=mean_star,
                       classifier_grams=cls_star, alive=pick(dead.alive, live.alive))


def deep_collapse_lambda(counts, M: int, *, bias: bool = False, ratio_H: float = 1.0):
  r"""Per direction, the weight decay :math:`\lambda^\star` above which it collapses to zero, for
  :math:`\lambda_{W_m} = \lambda`, :math:`\lambda_H = r\lambda` (``ratio_H = r``). From
  :math:`b/\sigma^2 = MN\lambda(Nr\lambda)^{1/M}/\sigma^2 = \rho_M` (:func:`deep_threshold_ratio`):

  .. math:: \lambda^\star = \Big(\frac{\rho_M\,\sigma^2}{M N (N r)^{1/M}}\Big)^{M/(M+1)},

  increasing in :math:`\sigma^2` (:math:`= n_k` bias-free), so classes collapse from the smallest up.
  Returned in the order of the target's singular values (descending; = the classes sorted by count when
  bias-free). A direction with :math:`\sigma = 0` gives 0."""
  n_K = jnp.asarray(counts, jnp.result_type(float))
  K = n_K.shape[0]
  N = jnp.sum(n_K)
  eye = jnp.eye(K, dtype=n_K.dtype)
  P = eye - jnp.outer(n_K / N, jnp.ones_like(n_K)) if bias else eye
  sig = jnp.linalg.svd(P * jnp.sqrt(n_K)[None, :], compute_uv=False)
  sig = jnp.where(sig > 1e-12 * jnp.max(sig), sig, 0.0)  # as in deep_mse_minimiser: round-off is 0
  return (deep_threshold_ratio(M) * sig**2 / (M * N * (N * ratio_H) ** (1.0 / M))) ** (M / (M + 1.0))


def _min_1d(fn, hi: float = 1e3, num: int = 4096, iters: int = 200):
  r"""Global minimiser over :math:`t \ge 0` of a scalar function that is smooth on :math:`(0, \infty)`: a
  geometric grid on :math:`[10^{-8}, \text{hi}]` locates the best cell, bisection on :math:`f'` refines it
  inside its neighbours, and :math:`t = 0` is compared last. Returns ``(t, f(t))``; vmappable through ``fn``."""
  grid = jnp.geomspace(1e-8, hi, num)
  vals = jax.vmap(fn)(grid)
  j = jnp.argmin(vals)
  lo, up = grid[jnp.maximum(j - 1, 0)], grid[jnp.minimum(j + 1, num - 1)]
  dfn = jax.grad(fn)

  def body(_, lu):
    lo, up = lu
    mid = 0.5 * (lo + up)
    neg = dfn(mid) < 0
    return jnp.where(neg, mid, lo), jnp.where(neg, up, mid)

  lo, up = jax.lax.fori_loop(0, iters, body, (lo, up))
  t = 0.5 * (lo + up)
  ft, f0 = fn(t), fn(jnp.zeros_like(t))
  return jnp.where(ft < f0, t, 0.0), jnp.minimum(ft, f0)


class DeepCE(NamedTuple):
  r"""A candidate of the balanced deep CE-UFM: its scale (``t`` for the ETF, ``a`` for the blocks), its
  objective, the singular values of :math:`\bar Z` and the class-level logit matrix :math:`\bar Z` (``K x K``)."""
  scale: jax.Array
  objective: jax.Array
  singular_values: jax.Array
  Zbar: jax.Array


def _ce_c(K, n, M, lam_W, lam_H):
  _, lam = _geo_mean_lams(lam_W, M)
  Lam = jnp.exp((jnp.log(jnp.asarray(lam_H, lam.dtype)) + jnp.sum(jnp.log(lam))) / (M + 1))
  return 0.5 * (M + 1) * Lam * jnp.asarray(n, lam.dtype) ** (1.0 / (M + 1))


def deep_ce_etf(K: int, n, M: int, lam_W, lam_H) -> DeepCE:
  r"""The best ETF (DNC) configuration of the balanced, bias-free deep CE-UFM (Garrod & Keating 2024,
  arXiv 2410.23169, the DNC family of Thm. 1; THEORY.md §11 A.1). By the reduction of
  :func:`deep_mse_minimiser` (NC1, minimal factorisation; exact for widths :math:`\ge K`) the objective of the
  class-level logits :math:`\bar Z` is :math:`\frac1K\sum_k\mathrm{CE}(\bar Z_{:k}, k) + c\sum_i\sigma_i(\bar Z)^{2/(M+1)}`,
  :math:`c = \frac{M+1}{2}\Lambda n^{1/(M+1)}`. On :math:`\bar Z = t(I - \frac1K\mathbf 1\mathbf 1^\top)`:

  .. math:: F_{ETF}(t) = \log(1 + (K-1)e^{-t}) + c(K-1)t^{2/(M+1)},

  minimised over :math:`t \ge 0` by :func:`_min_1d` (for ``M >= 2`` the penalty is concave and ``t = 0``,
  value :math:`\log K`, is always a local minimum). ``M = 1`` is Zhu et al.'s global minimum
  (:func:`ce_balanced`)."""
  _check_K(K)
  _check_K(M, lo=1)
  dt = jnp.result_type(float)
  return _deep_ce_etf_impl(jnp.asarray(n, dt), jnp.asarray(lam_W, dt), jnp.asarray(lam_H, dt), K=K, M=M)


@functools.partial(jax.jit, static_argnames=("K", "M"))
def _deep_ce_etf_impl(n, lam_W, lam_H, *, K, M):
  c = _ce_c(K, n, M, lam_W, lam_H)
  q = 2.0 / (M + 1)
  fn = lambda t: jnp.log1p((K - 1) * jnp.exp(-t)) + c * (K - 1) * t**q
  t, f = _min_1d(fn)
  E = jnp.eye(K, dtype=t.dtype) - 1.0 / K
  sv = jnp.concatenate([jnp.full((K - 1,), t), jnp.zeros((1,), t.dtype)])
  return DeepCE(scale=t, objective=f, singular_values=sv, Zbar=t * E)


def deep_ce_block(K: int, n, M: int, lam_W, lam_H) -> DeepCE:
  r"""The rank-``K/2`` block construction of Garrod & Keating (2024, arXiv 2410.23169, proof of Thm. 1; even
  ``K``): :math:`\bar Z = \mathrm{blockdiag}(a\,[[1,-1],[-1,1]])`, so every class sees logits
  :math:`(a, -a, 0, \dots, 0)` and :math:`\sigma = 2a` (``K/2`` times):

  .. math:: F_{blk}(a) = \log(1 + e^{-2a} + (K-2)e^{-a}) + c\,\tfrac K2(2a)^{2/(M+1)},

  ``c`` as in :func:`deep_ce_etf`. As :math:`\lambda\to0`, :math:`F_{blk}/F_{ETF}\to\frac K2 2^{2/(M+1)}/(K-1)`
  (THEORY.md §11 A.1): below 1 exactly in Thm. 1's range (``K >= 4, M >= 3`` or ``K >= 6, M = 2``)."""
  _check_K(K)
  _check_K(M, lo=1)
  if K % 2:
    raise ValueError(f"K = {K}: the block construction needs an even K; allowed: K even >= 2")
  dt = jnp.result_type(float)
  return _deep_ce_block_impl(jnp.asarray(n, dt), jnp.asarray(lam_W, dt), jnp.asarray(lam_H, dt), K=K, M=M)


@functools.partial(jax.jit, static_argnames=("K", "M"))
def _deep_ce_block_impl(n, lam_W, lam_H, *, K, M):
  c = _ce_c(K, n, M, lam_W, lam_H)
  q = 2.0 / (M + 1)
  fn = lambda a: jnp.log(1 + jnp.exp(-2 * a) + (K - 2) * jnp.exp(-a)) + c * (K / 2) * (2 * a) ** q
  a, f = _min_1d(fn)
  blk = jnp.asarray([[1.0, -1.0], [-1.0, 1.0]], a.dtype)
  Zbar = a * jnp.kron(jnp.eye(K // 2, dtype=a.dtype), blk)
  sv = jnp.concatenate([jnp.full((K // 2,), 2 * a), jnp.zeros((K - K // 2,), a.dtype)])
  return DeepCE(scale=a, objective=f, singular_values=sv, Zbar=Zbar)


def _deep_scalar_lams(problem):
  lam = np.asarray(problem.lam_W, np.float64)
  if lam.ndim > 1 or np.ndim(problem.lam_H) or np.ndim(problem.lam_b):
    raise ValueError("predict takes one problem: lam_W of shape (M,) or scalar, lam_H and lam_b scalars")
  lam = np.broadcast_to(lam, (problem.depth,))
  return lam, float(problem.lam_H), float(problem.lam_b)


def predict_deep(problem) -> Prediction:
  r"""The closed-form (MSE) or best known (CE) minimiser of a :class:`ufm.deep.DeepProblem`.

  * MSE, bias-free or with an unregularised bias, any counts (:func:`deep_mse_minimiser`, global
    minimiser; needs every width :math:`\ge` the rank of the solution, else :class:`NoClosedFormError`).
  * CE, balanced, :math:`\lambda_b = 0` or no bias: the lower of :func:`deep_ce_etf` and (even ``K``)
    :func:`deep_ce_block`. For ``M = 1`` this is Zhu et al.'s theorem; for ``M >= 2`` it is only the best
    *known* candidate (no theorem gives the global minimiser; Garrod & Keating show the ETF is not it for
    ``K >= 4, M >= 3`` or ``K >= 6, M = 2``), and ``source`` says so.

  ``gram_W`` is the product classifier's Gram, ``gram_M`` that of the (uncentred) means of ``H``.
  """
  from ufm.deep import balanced_factorisation  # a construction, not a solver
  K, M, counts = problem.K, problem.depth, problem.counts
  lam, lam_H, lam_b = _deep_scalar_lams(problem)
  if np.any(lam <= 0) or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam.tolist()}, lam_H = {lam_H:g}: a minimiser is attained only for all "
                            "weight decays > 0")
  if problem.bias and lam_b > 0:
    raise NoClosedFormError(f"lam_b = {lam_b:g} > 0: the deep closed forms cover a bias-free last layer or an "
                            "unregularised bias (lam_b = 0)")
  if problem.loss == "mse":
    sol = jax.tree.map(lambda v: np.asarray(v, np.float64),
                       deep_mse_minimiser(counts, lam, lam_H, M=M, bias=problem.bias))
    rank = int(sol.alive.sum())
    if min(problem.widths) < rank:
      raise NoClosedFormError(f"widths = {problem.widths} < rank {rank} of the minimiser: the deep rank "
                              "truncation is not derived; allowed: every width >= the rank")
    pi = np.asarray(counts, np.float64) / problem.N
    bias_rel = float(np.linalg.norm(sol.logits_M @ pi + sol.b))
    if rank == 0:
      geometry, metrics = "zero", {}
    elif problem.balanced and (rank == K - 1 if problem.bias else rank == K):
      geometry = "simplex ETF" if problem.bias else "orthogonal frame"
      metrics = _balanced_targets(K, etf_W=problem.bias, orthogonal_W=not problem.bias)
      metrics["bias_relation"] = bias_rel
    else:
      geometry = "general orthogonal frame" if not problem.bias else "imbalanced (centred SVD frame)"
      metrics = {"nc1": 0.0, "nc1_ratio": 0.0, "bias_relation": bias_rel}
    norm_W_sq = float(np.sum(sol.product_singular_values**2))
    norm_H_sq = float(np.sum(sol.factor_singular_values[0] ** 2))
    return Prediction(geometry=geometry, source=(
        "Dang et al. 2023 (arXiv 2301.00437), MSE theorems; constants, the global choice among {0, x_+} and "
        "unequal layer decays derived in ufm.theory.deep_mse_minimiser"), objective=float(sol.objective),
        norm_W_sq=norm_W_sq, norm_H_sq=norm_H_sq, norm_b=float(np.linalg.norm(sol.b)), gram_W=sol.gram_W,
        gram_M=sol.gram_M, logits_M=sol.logits_M, b=sol.b, metrics=metrics)
  if not problem.balanced:
    raise NoClosedFormError(f"counts = {counts}: the imbalanced deep CE-UFM has no closed form")
  if min(problem.widths) < K:
    raise NoClosedFormError(f"widths = {problem.widths}: the CE reduction needs every width >= K = {K}")
  n = counts[0]
  cands = {"simplex ETF": deep_ce_etf(K, n, M, lam, lam_H)}
  if K % 2 == 0:
    cands["rank-K/2 blocks"] = deep_ce_block(K, n, M, lam, lam_H)
  geometry = min(cands, key=lambda g: float(cands[g].objective))
  best = cands[geometry]
  if float(best.scale) == 0:
    geometry = "zero"
  params = jax.tree.map(lambda v: np.asarray(v, np.float64), balanced_factorisation(best.Zbar, problem))
  Wb = np.linalg.multi_dot(params.Ws[::-1]) if M > 1 else params.Ws[0]
  Hbar = params.H[:, ::n]
  if geometry == "simplex ETF":
    metrics = _balanced_targets(K, etf_W=True, orthogonal_W=False)
  elif geometry == "zero":
    metrics = {}
  else:
    metrics = {"nc1": 0.0, "nc1_ratio": 0.0}
  src = ("Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1" if M == 1 else
         "best KNOWN candidate, not a proven global minimum: the lower of the best ETF (Dang et al. 2023 "
         "Thm. A.1 claims it is global) and Garrod & Keating's rank-K/2 blocks (arXiv 2410.23169, Thm. 1)")
  return Prediction(geometry=geometry, source=src, objective=float(best.objective),
                    norm_W_sq=float(np.sum(Wb**2)), norm_H_sq=float(np.sum(params.H**2)), norm_b=0.0,
                    gram_W=Wb @ Wb.T, gram_M=Hbar.T @ Hbar, logits_M=np.asarray(best.Zbar), b=np.zeros(K),
                    metrics=metrics)
# ------------------------------------------------------------------ issue 12: K > d + 1, spherical UFM
# Closed forms for the constructed configurations of the K > d regime (regular polygons, the orthoplex,
# the simplex ETF on the sphere) and the spherical CE objective at a collapsed configuration. They are the
# expected side of tests/test_geometry.py, tests/test_spherical.py and tests/test_tiled.py.


def regular_polygon(K: int, dtype=None) -> jax.Array:
  r"""The regular ``K``-gon on the unit circle as the columns of a ``2 x K`` matrix,
  :math:`x_k = (\cos(2\pi k/K), \sin(2\pi k/K))`: the softmax code and every minimal Riesz/log-energy
  configuration of ``K`` points for ``d = 2`` (Jiang et al. 2024, arXiv 2310.05351; THEORY.md §5.7)."""
  _check_K(K, lo=3)
  a = 2 * np.pi * np.arange(K) / K
  return jnp.asarray(np.stack([np.cos(a), np.sin(a)]), dtype or jnp.result_type(float))


def cross_polytope(d: int, dtype=None) -> jax.Array:
  r"""The ``2d`` vertices :math:`\pm e_i` of the cross-polytope (orthoplex), columns of a ``d x 2d`` matrix in the
  order :math:`e_1, -e_1, e_2, -e_2, \dots`."""
  _check_K(d, lo=1)
  X = np.zeros((d, 2 * d))
  for i in range(d):
    X[i, 2 * i], X[i, 2 * i + 1] = 1.0, -1.0
  return jnp.asarray(X, dtype or jnp.result_type(float))


def _polygon_chords(K: int) -> np.ndarray:
  """Chord lengths 2 sin(pi j / K), j = 1..K-1: the distance classes of the regular K-gon (K ordered pairs each)."""
  return 2 * np.sin(np.pi * np.arange(1, K) / K)


def riesz_energy_regular_polygon(K: int, s: float) -> float:
  r"""Energy of the regular ``K``-gon: :math:`E_s = \frac K2\sum_{j=1}^{K-1}(2\sin\frac{\pi j}K)^{-s}` for ``s > 0``,
  and :math:`E_0 = \sum_{i<j}\log\frac1{\|x_i - x_j\|} = -\frac K2\log K` (from
  :math:`\prod_{j=1}^{K-1}|1 - \omega^j| = K`, :math:`\omega = e^{2\pi i/K}`)."""
  _check_K(K, lo=3)
  if s == 0:
    return -0.5 * K * math.log(K)
  return 0.5 * K * float(np.sum(_polygon_chords(K) ** (-float(s))))


def riesz_energy_cross_polytope(d: int, s: float) -> float:
  r"""Energy of the ``2d``-point cross-polytope: ``d`` antipodal pairs at distance 2 and ``2d(d-1)`` pairs at
  :math:`\sqrt2`: :math:`E_s = d\,2^{-s} + 2d(d-1)\,2^{-s/2}`, :math:`E_0 = -d\log 2 - d(d-1)\log 2`."""
  _check_K(d, lo=1)
  if s == 0:
    return -d * math.log(2) - d * (d - 1) * math.log(2)
  return d * 2.0 ** (-s) + 2 * d * (d - 1) * 2.0 ** (-s / 2)


def riesz_energy_simplex(K: int, s: float) -> float:
  r"""Energy of the simplex ETF (all :math:`\binom K2` distances :math:`\sqrt{2K/(K-1)}`)."""
  _check_K(K)
  P, r = K * (K - 1) / 2, math.sqrt(2 * K / (K - 1))
  return -P * math.log(r) if s == 0 else P * r ** (-float(s))


class ConfigurationMetrics(NamedTuple):
  """Closed-form metric values of a constructed configuration of unit class means with zero mean (the NC
  metrics of :mod:`ufm.metrics` on the centred means): GNC2 (mean over pairs of :math:`\\log(1/\\|\\hat\\mu_c -
  \\hat\\mu_{c'}\\|)`), its population variance over pairs, the mean and population variance of the pairwise
  cosines, :math:`\\mathrm{avg}|\\cos + 1/(K-1)|` (``max_angle``), the ETF error of the Gram matrix and the
  one-vs-rest distance :math:`\\rho` (equal for every class)."""
  gnc2: float
  gnc2_var: float
  cos_mean: float
  cos_var: float
  max_angle: float
  etf_error: float
  one_vs_rest: float


def regular_polygon_metrics(K: int) -> ConfigurationMetrics:
  r"""Metrics of the regular ``K``-gon (``K >= 3``). Each distance class :math:`j = 1..K-1` (chord
  :math:`2\sin(\pi j/K)`, cosine :math:`\cos(2\pi j/K)`) is met by the same number of pairs, so pair averages are
  averages over ``j``: GNC2 :math:`= -\log K/(K-1)`; :math:`\overline{\cos} = -1/(K-1)`;
  :math:`\overline{\cos^2} = (K/2 - 1)/(K-1)`; the Gram matrix is circulant of rank 2 with
  :math:`\|G\|_F^2 = K^2/2`, :math:`\langle G, E\rangle = K/\sqrt{K-1}`, so the ETF error is
  :math:`\sqrt{2 - 2\sqrt{2/(K-1)}}`; :math:`\rho = 1 - \cos(2\pi/K)` (the distance from a vertex to the chord
  joining its neighbours)."""
  _check_K(K, lo=3)
  L = -np.log(_polygon_chords(K))
  c = np.cos(2 * np.pi * np.arange(1, K) / K)
  mean_c = -1.0 / (K - 1)
  return ConfigurationMetrics(gnc2=-math.log(K) / (K - 1), gnc2_var=float(np.mean(L**2) - np.mean(L) ** 2),
                              cos_mean=mean_c, cos_var=(K / 2 - 1) / (K - 1) - mean_c**2,
                              max_angle=float(np.mean(np.abs(c - mean_c))),
                              etf_error=math.sqrt(max(2 - 2 * math.sqrt(2 / (K - 1)), 0.0)),
                              one_vs_rest=1 - math.cos(2 * math.pi / K))


def cross_polytope_metrics(d: int) -> ConfigurationMetrics:
  r"""Metrics of the cross-polytope, ``K = 2d`` (``d >= 2``): of the :math:`P = d(2d-1)` pairs, ``d`` are antipodal
  (cosine -1, :math:`\log(1/2)`) and the rest orthogonal (0, :math:`\log(1/\sqrt2)`), so with :math:`p = d/P = 1/(K-1)`:
  GNC2 :math:`= -\frac{1+p}{2}\log 2`, variance :math:`p(1-p)(\frac12\log 2)^2`; :math:`\overline{\cos} = -p`,
  variance :math:`p(1-p)`; ``max_angle`` :math:`= p(1-p) + (1-p)p = 2p(1-p)`; :math:`\|G\|_F^2 = 2K`,
  :math:`\langle G, E\rangle = K/\sqrt{K-1}`, ETF error :math:`\sqrt{2 - 2\sqrt{K/(2(K-1))}}`; :math:`\rho = 1`
  (the hull of the other vertices contains 0 and has no point with a positive coordinate along the vertex)."""
  _check_K(d, lo=2)
  K = 2 * d
  p = 1.0 / (K - 1)
  h = 0.5 * math.log(2)
  return ConfigurationMetrics(gnc2=-(1 + p) * h, gnc2_var=p * (1 - p) * h**2, cos_mean=-p, cos_var=p * (1 - p),
                              max_angle=2 * p * (1 - p), etf_error=math.sqrt(2 - 2 * math.sqrt(K / (2 * (K - 1)))),
                              one_vs_rest=1.0)


def simplex_metrics(K: int) -> ConfigurationMetrics:
  r"""Metrics of the simplex ETF: every pair at cosine :math:`-1/(K-1)` and distance :math:`\sqrt{2K/(K-1)}`, so
  GNC2 :math:`= -\frac12\log\frac{2K}{K-1}` with zero variance (THEORY.md §0.3), ETF error 0, and
  :math:`\rho = K/(K-1)` (the distance from a vertex to the centroid :math:`-x_k/(K-1)` of the opposite facet)."""
  _check_K(K, lo=3)
  return ConfigurationMetrics(gnc2=-0.5 * math.log(2 * K / (K - 1)), gnc2_var=0.0, cos_mean=-1.0 / (K - 1),
                              cos_var=0.0, max_angle=0.0, etf_error=0.0, one_vs_rest=K / (K - 1))


def spherical_ce_collapsed(G: jax.Array, tau) -> jax.Array:
  r"""The spherical CE-UFM objective (balanced) at a collapsed configuration with features equal to their unit
  classifiers, :math:`h_i = w_{y_i}`: :math:`\frac1K\sum_k\log\sum_j\exp\big((G_{kj} - G_{kk})/\tau\big)` with
  :math:`G = WW^\top`. For the simplex ETF: :math:`\log\big(1 + (K-1)e^{-K/((K-1)\tau)}\big)` (Lu & Steinerberger
  2022, arXiv 2012.08465; Jiang et al. 2024, arXiv 2310.05351, eq. (3))."""
  Gd = jnp.diagonal(G)
  return jnp.mean(jax.nn.logsumexp((G - Gd[:, None]) / tau, axis=1))
