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

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.problem import Problem

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


def predict(problem: Problem) -> Prediction:
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
