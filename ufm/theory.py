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
    "MixupFeature",
    "mixup_confidence",
    "mixup_kappa",
    "mixup_optimal_feature",
    "mixup_same_class_scale",
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
