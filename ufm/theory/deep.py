r"""The deep linear UFM: the MSE global minimiser at any depth and counts, the balanced CE candidates, predictions.

Dang et al. 2023 (arXiv 2301.00437): balanced / imbalanced MSE at any depth; Garrod & Keating 2024
(arXiv 2410.23169): balanced CE, the best ETF configuration against a lower-rank construction. Derivations:
``ufm/theory/derivations.md`` §1.2–§1.3, §9.1, §11 Part A (cited as "derivations §x"), re-derived in the
docstrings below.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory._onedim import global_min_1d
from ufm.theory.prediction import NoClosedFormError, Prediction, balanced_metric_targets, predict, register_prediction
from ufm.validate import check_int

__all__ = [
    "DEEP_TIE_RTOL",
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
    "predict_deep_ce",
    "predict_deep_mse",
]

def _geo_mean_lams(lam_W, M: int):
  """``(lam_bar, Lam_fn)``: the geometric mean of the layers' decays (``lam_W`` scalar or ``(M,)``)."""
  lam = jnp.broadcast_to(jnp.asarray(lam_W, jnp.result_type(float)), (M,))
  return jnp.exp(jnp.mean(jnp.log(lam))), lam


def deep_phi(x, M: int):
  r""":math:`\varphi_M(x) = M x^{M-1}/(x^M + 1)^2`, the right side of Dang et al.'s per-class equation
  :math:`b/n_k = \varphi_M(x)` (their ``compute_x``; derivations §1.3)."""
  x = jnp.asarray(x, jnp.result_type(float))
  return M * x ** (M - 1) / (x**M + 1) ** 2


def deep_existence_ratio(M: int) -> float:
  r"""The largest :math:`b/n_k` for which :math:`b/n_k = \varphi_M(x)` has a root: for ``M = 1``,
  :math:`\varphi_1(0) = 1`; for ``M >= 2`` the maximum of :math:`\varphi_M` at
  :math:`x_*^M = (M-1)/(M+1)`, :math:`\varphi_M(x_*) = (M+1)^2 x_*^{M-1}/(4M)` (derived:
  :math:`\varphi_M' = 0 \iff (M-1)(x^M+1) = 2Mx^M`). Classes with a larger ratio have no root; Dang et al.'s
  code then calls ``max`` of an empty list (an exception), so it cannot run there."""
  check_int("M", M, lo=1)
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
  check_int("M", M, lo=1)
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
  check_int("M", M, lo=1)
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
  objective of class ``k`` at :math:`s_k^{2M} = N\lambda_H x^M`, derivations §1.3; :math:`G(0)/n_k = 1`)."""
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
  check_int("M", M, lo=1)
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
  \rho_M`, :func:`deep_threshold_ratio`, ``M >= 2``) have two global optima, :math:`z_i = 0` and
  :math:`z_i = \sigma_i x_+^M/(x_+^M + 1)` with :math:`x_+^M = M - 1`. All tied directions share one
  :math:`\sigma` (the ratio fixes it), so the target restricted to them is :math:`\sigma U_T V_T^\top`, and by
  von Neumann's trace inequality the optimal logits there are :math:`Z_T = z_+ U_T\,\Pi\,V_T^\top` for *any*
  orthogonal projection :math:`\Pi` on the tied coordinates (rank ``r`` = the number of tied directions kept,
  ``0..|T|``; the eigenvectors are free because the target's singular value is repeated). In the target's
  singular bases the layer-``m`` class-mean Gram is then :math:`\mathrm{diag}(f_{m,i}^2)` outside the tied
  block and :math:`f_{m,+}^2\Pi` inside it, and the classifier Gram likewise with the same :math:`\Pi`. The
  two points :func:`deep_mse_minimiser` can return (``rule="global"``: :math:`\Pi = 0`; every tied direction
  alive: :math:`\Pi = I`) are the extremes. Example: counts (8, 4, 2, 2), ``M = 2``, the two small classes at
  :math:`b/n_k = \rho_2 = 1/2`: rank-1 :math:`\Pi` (a Gram block :math:`\tfrac14 uu^\top`, ``u`` any unit
  vector) is as good as 0 or :math:`\tfrac14 I`.

  *Nearest member.* :math:`\Pi` is the projection on the ``r`` leading eigenvectors of the layer-1 tied block
  (``r`` = its eigenvalues above half of :math:`f_{1,+}^2`), used for every layer and the classifiers.

  Args:
    mean_grams: ``(M+1, K, K)`` uncentred class-mean Grams of :math:`H_1, \dots, H_{M+1}` (of a solve).
    classifier_grams: ``(M, K, K)``: :math:`C_mC_m^\top`, :math:`C_m = W_M\cdots W_m`.
    counts, lam_W, lam_H, M, bias, tie_rtol: as for :func:`deep_mse_minimiser`.

  Returns:
    A :class:`DeepMSEMinimiser` of that member (``x``, ``z``, ``alive`` and the singular values with the ``r``
    kept tied directions alive; ``objective`` the global optimum).
  """
  check_int("M", M, lo=1)
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
  inside its neighbours, and :math:`t = 0` is compared last (:func:`ufm.theory._onedim.global_min_1d`). Returns
  ``(t, f(t))``; vmappable through ``fn``."""
  return global_min_1d(fn, hi=hi, num=num, iters=iters, lo=1e-8)


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
  arXiv 2410.23169, the DNC family of Thm. 1; derivations §11 A.1). By the reduction of
  :func:`deep_mse_minimiser` (NC1, minimal factorisation; exact for widths :math:`\ge K`) the objective of the
  class-level logits :math:`\bar Z` is
  :math:`\frac1K\sum_k\mathrm{CE}(\bar Z_{:k}, k) + c\sum_i\sigma_i(\bar Z)^{2/(M+1)}`,
  :math:`c = \frac{M+1}{2}\Lambda n^{1/(M+1)}`. On :math:`\bar Z = t(I - \frac1K\mathbf 1\mathbf 1^\top)`:

  .. math:: F_{ETF}(t) = \log(1 + (K-1)e^{-t}) + c(K-1)t^{2/(M+1)},

  minimised over :math:`t \ge 0` by :func:`_min_1d` (for ``M >= 2`` the penalty is concave and ``t = 0``,
  value :math:`\log K`, is always a local minimum). ``M = 1`` is Zhu et al.'s global minimum
  (:func:`ce_balanced`)."""
  check_int("K", K, lo=2)
  check_int("M", M, lo=1)
  dt = jnp.result_type(float)
  return _deep_ce_1d(jnp.asarray(n, dt), jnp.asarray(lam_W, dt), jnp.asarray(lam_H, dt), K=K, M=M, block=False)


@functools.partial(jax.jit, static_argnames=("K", "M", "block"))
def _deep_ce_1d(n, lam_W, lam_H, *, K, M, block):
  """The one-parameter minimisation of :func:`deep_ce_etf` (``block`` false: scale ``t``, ``K - 1`` singular values
  ``t``) or :func:`deep_ce_block` (``block`` true: scale ``a``, ``K/2`` singular values ``2a``)."""
  c = _ce_c(K, n, M, lam_W, lam_H)
  q = 2.0 / (M + 1)
  if block:
    fn = lambda a: jnp.log(1 + jnp.exp(-2 * a) + (K - 2) * jnp.exp(-a)) + c * (K / 2) * (2 * a) ** q
  else:
    fn = lambda t: jnp.log1p((K - 1) * jnp.exp(-t)) + c * (K - 1) * t**q
  s, f = _min_1d(fn)
  if block:
    blk = jnp.asarray([[1.0, -1.0], [-1.0, 1.0]], s.dtype)
    Zbar = s * jnp.kron(jnp.eye(K // 2, dtype=s.dtype), blk)
    sv = jnp.concatenate([jnp.full((K // 2,), 2 * s), jnp.zeros((K - K // 2,), s.dtype)])
  else:
    Zbar = s * (jnp.eye(K, dtype=s.dtype) - 1.0 / K)
    sv = jnp.concatenate([jnp.full((K - 1,), s), jnp.zeros((1,), s.dtype)])
  return DeepCE(scale=s, objective=f, singular_values=sv, Zbar=Zbar)


def deep_ce_block(K: int, n, M: int, lam_W, lam_H) -> DeepCE:
  r"""The rank-``K/2`` block construction of Garrod & Keating (2024, arXiv 2410.23169, proof of Thm. 1; even
  ``K``): :math:`\bar Z = \mathrm{blockdiag}(a\,[[1,-1],[-1,1]])`, so every class sees logits
  :math:`(a, -a, 0, \dots, 0)` and :math:`\sigma = 2a` (``K/2`` times):

  .. math:: F_{blk}(a) = \log(1 + e^{-2a} + (K-2)e^{-a}) + c\,\tfrac K2(2a)^{2/(M+1)},

  ``c`` as in :func:`deep_ce_etf`. As :math:`\lambda\to0`, :math:`F_{blk}/F_{ETF}\to\frac K2 2^{2/(M+1)}/(K-1)`
  (derivations §11 A.1): below 1 exactly in Thm. 1's range (``K >= 4, M >= 3`` or ``K >= 6, M = 2``)."""
  check_int("K", K, lo=2)
  check_int("M", M, lo=1)
  if K % 2:
    raise ValueError(f"K = {K}: the block construction needs an even K; allowed: K even >= 2")
  dt = jnp.result_type(float)
  return _deep_ce_1d(jnp.asarray(n, dt), jnp.asarray(lam_W, dt), jnp.asarray(lam_H, dt), K=K, M=M, block=True)


def _deep_scalar_lams(problem):
  lam = np.asarray(problem.lam_W, np.float64)
  if lam.ndim > 1 or np.ndim(problem.lam_H) or np.ndim(problem.lam_b):
    raise ValueError("predict takes one problem: lam_W of shape (M,) or scalar, lam_H and lam_b scalars")
  lam = np.broadcast_to(lam, (problem.depth,))
  return lam, float(problem.lam_H), float(problem.lam_b)




def _deep_lams(problem):
  """``(lam_W (M,), lam_H, lam_b)`` of one deep problem; :class:`NoClosedFormError` outside the covered range."""
  lam, lam_H, lam_b = _deep_scalar_lams(problem)
  if np.any(lam <= 0) or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam.tolist()}, lam_H = {lam_H:g}: a minimiser is attained only for all "
                            "weight decays > 0")
  if problem.bias and lam_b > 0:
    raise NoClosedFormError(f"lam_b = {lam_b:g} > 0: the deep closed forms cover a bias-free last layer or an "
                            "unregularised bias (lam_b = 0)")
  return lam, lam_H, lam_b


@register_prediction("deep", "mse")
def predict_deep_mse(problem) -> Prediction:
  r"""The global minimiser of an MSE :class:`ufm.deep.DeepProblem`: bias-free or with an unregularised bias, any
  counts (:func:`deep_mse_minimiser`; Dang et al. 2023, arXiv 2301.00437). Needs every width :math:`\ge` the rank
  of the solution, else :class:`NoClosedFormError`. ``gram_W`` is the product classifier's Gram, ``gram_M`` that
  of the (uncentred) means of ``H``.
  """
  K, counts = problem.K, problem.counts
  lam, lam_H, _ = _deep_lams(problem)
  sol = jax.tree.map(lambda v: np.asarray(v, np.float64),
                     deep_mse_minimiser(counts, lam, lam_H, M=problem.depth, bias=problem.bias))
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
    metrics = balanced_metric_targets(K, etf_W=problem.bias, orthogonal_W=not problem.bias)
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


@register_prediction("deep", "ce")
def predict_deep_ce(problem) -> Prediction:
  r"""The best known minimiser of a balanced CE :class:`ufm.deep.DeepProblem` (no bias, or :math:`\lambda_b = 0`):
  the lower of :func:`deep_ce_etf` and (even ``K``) :func:`deep_ce_block`, factorised by
  :func:`ufm.deep.balanced_factorisation`. For ``M = 1`` this is Zhu et al.'s theorem (2021, arXiv 2105.02375,
  Thm. 3.1); for ``M >= 2`` it is only the best *known* candidate (no theorem gives the global minimiser; Garrod
  & Keating 2024, arXiv 2410.23169, Thm. 1, show the ETF is not it for ``K >= 4, M >= 3`` or ``K >= 6, M = 2``),
  and ``source`` says so. Needs balanced counts and every width :math:`\ge K`, else :class:`NoClosedFormError`.
  """
  from ufm.deep import balanced_factorisation  # a construction, not a solver
  K, M, counts = problem.K, problem.depth, problem.counts
  lam, lam_H, _ = _deep_lams(problem)
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
    metrics = balanced_metric_targets(K, etf_W=True, orthogonal_W=False)
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


def predict_deep(problem) -> Prediction:
  r"""The closed-form (MSE) or best known (CE) minimiser of a :class:`ufm.deep.DeepProblem`: :func:`predict`
  restricted to the ``deep`` family (:func:`predict_deep_mse`, :func:`predict_deep_ce`); any other family or a loss
  without a registered closed form raises :class:`NoClosedFormError`.

  ``gram_W`` is the product classifier's Gram, ``gram_M`` that of the (uncentred) means of ``H``.
  """
  if problem.FAMILY != "deep":
    raise NoClosedFormError(f"predict_deep takes a deep problem (FAMILY 'deep'), not family {problem.FAMILY!r}; "
                            "use ufm.theory.predict")
  return predict(problem)
