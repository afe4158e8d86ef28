r"""The plain (one-layer) UFM: the balanced CE closed form, the MSE minimiser for any counts, and their predictions.

Normalisation: the objective of :mod:`ufm.objectives`,
:math:`f = \frac1N\sum_i \ell(Wh_i + b, y_i) + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
+ \frac{\lambda_b}{2}\|b\|^2`, :math:`\ell_{MSE}(z,y) = \frac12\|z-y\|^2`. Sections cited as "derivations §x" are in
``ufm/theory/derivations.md``; the derivations that go beyond it are in the docstrings of :func:`mse_minimiser` and
:func:`ce_balanced`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory.prediction import NoClosedFormError, Prediction, balanced_metric_targets, register_prediction

__all__ = [
    "CEBalanced",
    "MSEMinimiser",
    "ce_balanced",
    "collapse_threshold",
    "mse_minimiser",
    "predict_plain_ce",
    "predict_plain_mse",
]

def collapse_threshold(K: int, n, lam_W, lam_H) -> jax.Array:
  r"""The balanced collapse-to-zero index :math:`\tau = K\sqrt{n\lambda_W\lambda_H}`.

  For the balanced CE-UFM (Zhu et al. 2021, arXiv 2105.02375, Thm. 3.1 with the norm
  reduction of :func:`ce_balanced`) and the balanced MSE-UFM with or without an
  unregularised bias (:func:`mse_minimiser`), the global minimiser is ``W = 0, H = 0``
  iff :math:`\tau \ge 1` (derived in those functions; derivations §5.1, §1.2).
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

  *Norm (derived here; derivations §5.1).* With :math:`t = a^2` the logit margin is
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
    depth 1; derivations §1.3), the orthogonal frame when balanced (Tirer & Bruna 2022).
  * Bias: write :math:`H = \tilde H + h_G\mathbf 1^\top`, :math:`\pi = (n_k/N)_k`. Then
    :math:`\frac{1}{2N}\|WH + b\mathbf 1^\top - Y\|^2 = \frac{1}{2N}\|W\tilde H - \tilde Y\|^2
    + \frac12\|Wh_G + b - \pi\|^2` with :math:`\tilde Y = (I - \pi\mathbf 1^\top)Y`, so
    :math:`P = I - \pi\mathbf 1^\top` and :math:`b = (\pi - Wh_G)/(1 + \lambda_b)`.
    With :math:`\lambda_b = 0`: :math:`h_G = 0`, :math:`b = \pi` (``1/K`` balanced: Zhou et
    al. 2022, arXiv 2203.01238), the centred block gives the simplex ETF when
    balanced, with the same threshold :math:`K\sqrt{n\lambda_W\lambda_H} < 1`.
  * Regularised bias, **balanced only** (``lam_b > 0``; derived here):
    minimising over ``b`` leaves :math:`\frac{\gamma}{2}\|Wh_G - \pi\|^2`,
    :math:`\gamma = \lambda_b/(1+\lambda_b)`. When balanced, :math:`\pi \propto \mathbf 1`
    is orthogonal to the column space of :math:`\tilde Y`, so by pinching the problem
    splits into the centred block and a rank-one *mean block* with target singular
    value :math:`\sigma_0 = \sqrt N\|\pi\| = \sqrt n` and weight :math:`\gamma`:
    :math:`z_0 = (\sigma_0 - \mu/\gamma)_+`. So the features' global mean is **non-zero**
    (and :math:`W` leaves the ETF) once :math:`\lambda_b/(1+\lambda_b) > \sqrt{KN\lambda_W\lambda_H}`,
    which needs ``d >= K`` (``rank`` counts it). As ``lam_b -> inf`` the uncentred means tend to an
    orthogonal frame, as reported by arXiv 2606.00344 ("The role of class encoding in neural collapse").
    Imbalanced with ``lam_b > 0`` does not split; it returns NaN and :func:`predict_plain_mse` refuses it.

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


def _scalar(problem, name: str) -> float:
  v = np.asarray(getattr(problem, name))
  if v.ndim:
    raise ValueError(f"{name} has shape {v.shape}; predict takes one problem (scalar weight decays). "
                     "For a batch, vmap ufm.theory.ce_balanced / mse_minimiser instead.")
  return float(v)


def _plain_lams(problem) -> tuple[float, float, float]:
  """``(lam_W, lam_H, lam_b)`` of one problem as floats; :class:`NoClosedFormError` unless ``lam_W, lam_H > 0``."""
  lam_W, lam_H, lam_b = (_scalar(problem, k) for k in ("lam_W", "lam_H", "lam_b"))
  if lam_W <= 0 or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W:g}, lam_H = {lam_H:g}: the UFM has a closed-form minimiser "
                            "only for lam_W > 0 and lam_H > 0 (otherwise the infimum is not attained)")
  return lam_W, lam_H, lam_b


@register_prediction("plain", "ce")
def predict_plain_ce(problem) -> Prediction:
  r"""The closed-form minimiser of a balanced CE :class:`ufm.problem.Problem` with ``d >= K-1`` (bias-free, or with
  a bias): the simplex ETF of :func:`ce_balanced` (Zhu et al. 2021, arXiv 2105.02375, Thm. 3.1), or zero when
  :func:`collapse_threshold` :math:`\ge 1`. With an unregularised bias only :math:`b \propto \mathbf 1` is fixed
  (``b`` and ``norm_b`` are NaN). Raises :class:`NoClosedFormError` for imbalanced counts (minority collapse and
  SELI are limits, derivations §5.5, §5.6), ``d < K-1``, or a zero weight decay.
  """
  K, counts, d = problem.K, problem.counts, problem.d
  lam_W, lam_H, lam_b = _plain_lams(problem)
  if not problem.balanced:
    raise NoClosedFormError(f"counts = {counts}: the imbalanced CE-UFM has no closed form "
                            "(minority collapse and SELI are limits; derivations §5.5, §5.6)")
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
  metrics = balanced_metric_targets(K, etf_W=True, orthogonal_W=False) if alive else {}
  if alive and not b_undetermined:
    metrics["bias_relation"] = 0.0
  return Prediction(
      geometry="simplex ETF" if alive else "zero",
      source="Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1; norm from the convex reduction in ufm.theory.ce_balanced",
      objective=f, norm_W_sq=K * t, norm_H_sq=problem.N * rho**2 * t,
      norm_b=float("nan") if b_undetermined else 0.0,
      gram_W=t * G, gram_M=rho**2 * t * G, logits_M=rho * t * G, b=b, metrics=metrics)


@register_prediction("plain", "mse")
def predict_plain_mse(problem) -> Prediction:
  r"""The closed-form minimiser of an MSE :class:`ufm.problem.Problem` (:func:`mse_minimiser`): bias-free with any
  counts (the orthogonal frame when balanced, Tirer & Bruna 2022, arXiv 2202.08087; the general orthogonal frame
  of Dang et al. 2023, arXiv 2301.00437, at depth 1), an unregularised bias with any counts (the simplex ETF when
  balanced, Zhou et al. 2022, arXiv 2203.01238), a regularised bias when balanced; ``d`` below the unconstrained
  rank when the kept directions are unique (a rank-``d`` truncation). Raises :class:`NoClosedFormError` for a
  regularised bias with imbalanced counts, tied directions at the rank cut, or a zero weight decay.
  """
  K, counts, d = problem.K, problem.counts, problem.d
  lam_W, lam_H, lam_b = _plain_lams(problem)
  lam_b_eff = lam_b if problem.bias else 0.0
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
      metrics = balanced_metric_targets(K, etf_W=z0 == 0, orthogonal_W=False)
    else:
      geometry = "orthogonal frame"
      metrics = balanced_metric_targets(K, etf_W=False, orthogonal_W=True)
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
