r"""The loss family in the balanced plain UFM: the global minimisers' norms.

The loss family in the balanced plain UFM: the global minimisers' norms for label smoothing, focal loss and the
rescaled MSE (Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu, NeurIPS 2022, "Are All Losses Created Equal? A Neural Collapse
Perspective", arXiv 2210.02192, Thm. 3.1: for the losses with their "contrastive property" (CE, LS, FL) every global
minimiser of the balanced UFM is a neural-collapse solution, a simplex ETF with :math:`h_{k,i} = \rho w_k`,
:math:`\rho = \sqrt{\lambda_W/(n\lambda_H)}`).

The theorem fixes the geometry, not the scale; the scale is one scalar equation per loss (derivations §12). With the
ETF ansatz every sample of class ``k`` has the logits :math:`z = u(\frac{K}{K-1}e_k - \frac1{K-1}\mathbf 1)`, margin
:math:`m = \frac{K}{K-1}u`, and the regulariser at its balanced minimum is :math:`\tau u`,
:math:`\tau = K\sqrt{n\lambda_W\lambda_H}` (:func:`ufm.theory.plain.collapse_threshold`), so the objective is

.. math:: g(u) = \ell(z(u), e_k) + \tau u, \qquad \|w_k\|^2 = u/\rho,\quad \|h_{k,i}\|^2 = \rho u.

* label smoothing: :math:`g(u) = \log(1 + (K-1)e^{-m}) + (\tau + \alpha)u`, convex, minimised in closed form
  (:func:`label_smoothing_etf`); the ETF is the global minimum of the UFM because the loss is convex in the logits
  (derivations §12.2);
* focal loss: :math:`g(u) = \sigma(x)^\gamma\,\mathrm{softplus}(x) + \tau u`, :math:`x = \log(K-1) - m`, minimised
  numerically over :math:`u \ge 0` (:func:`focal_etf`); the loss is not convex in the logits, so the theorem is
  what says that this ETF is the global minimum (checked against multi-start solves in the tests);
* rescaled MSE (Hui & Belkin 2021, arXiv 2006.07322): the loss is convex, so the minimiser over class-level logits
  of the nuclear-norm reduction is exact: with an unregularised bias a simplex ETF, bias-free an orthogonal frame
  (as plain MSE), each with a closed-form scale (:func:`rescaled_mse_minimiser`; derivations §12.3).

Every function is jittable and vmaps over its scalar arguments (the loss parameters included).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory._onedim import global_min_1d
from ufm.theory.prediction import NoClosedFormError, Prediction, balanced_metric_targets, register_prediction
from ufm.validate import check_int

__all__ = [
    "LossETF",
    "RescaledMSEMinimiser",
    "focal_etf",
    "focal_etf_objective",
    "label_smoothing_etf",
    "predict_plain_focal",
    "predict_plain_label_smoothing",
    "predict_plain_rescaled_mse",
    "rescaled_mse_minimiser",
]

SOURCE = "Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu 2022 (arXiv 2210.02192), Thm. 3.1"


class LossETF(NamedTuple):
  r"""The ETF minimiser of a softmax loss: logit scale ``u`` (true-class logit), ``norm_w_sq`` :math:`=\|w_k\|^2`,
  ``ratio`` :math:`\rho = \|h_{k,i}\|/\|w_k\|`, ``objective``."""
  u: jax.Array
  norm_w_sq: jax.Array
  ratio: jax.Array
  objective: jax.Array


def _tau_rho(K, n, lam_W, lam_H):
  lam_W, lam_H = jnp.asarray(lam_W), jnp.asarray(lam_H)
  return K * jnp.sqrt(n * lam_W * lam_H), jnp.sqrt(lam_W / (n * lam_H))


def _finish(u, f, rho, lam_W, lam_H) -> LossETF:
  ok = (jnp.asarray(lam_W) > 0) & (jnp.asarray(lam_H) > 0)  # otherwise no minimiser is attained
  nan = jnp.full_like(f, jnp.nan)
  return LossETF(u=jnp.where(ok, u, nan), norm_w_sq=jnp.where(ok, u / rho, nan), ratio=jnp.where(ok, rho, nan),
                 objective=jnp.where(ok, f, nan))


def label_smoothing_etf(K: int, n, lam_W, lam_H, alpha) -> LossETF:
  r"""Global minimiser of the balanced label-smoothing UFM, ``d >= K-1`` (Zhou et al. 2022, arXiv 2210.02192,
  Thm. 3.1 for the geometry; the norm derived in derivations §12.1).

  With :math:`s = \tau + \alpha`: :math:`u^\star = 0` if :math:`s \ge 1`, otherwise
  :math:`m^\star = \log\frac{K - s(K-1)}{s}`, :math:`u^\star = \frac{K-1}{K}m^\star`, and
  :math:`f^\star = \log(1 + (K-1)e^{-m^\star}) + s\,u^\star` (``alpha = 0`` is :func:`ufm.theory.ce_balanced`).
  Label smoothing thus acts on the scale as an extra collapse index: the solution is zero iff
  :math:`K\sqrt{n\lambda_W\lambda_H} + \alpha \ge 1`.
  """
  check_int("K", K, lo=2)
  tau, rho = _tau_rho(K, n, lam_W, lam_H)
  s = tau + jnp.asarray(alpha, tau.dtype)
  alive = s < 1
  s_safe = jnp.where(alive, s, 0.5)
  m = jnp.where(alive, jnp.log((K - s_safe * (K - 1)) / s_safe), 0.0)
  u = (K - 1) / K * m
  f = jnp.logaddexp(0.0, math.log(K - 1) - m) + s * u
  return _finish(u, f, rho, lam_W, lam_H)


def focal_etf_objective(u, K: int, tau, gamma):
  r""":math:`g(u) = \sigma(x)^\gamma\,\mathrm{softplus}(x) + \tau u`, :math:`x = \log(K-1) - \frac{K}{K-1}u`: the
  balanced focal-loss UFM on the ETF ansatz at logit scale ``u`` (derivations §12.1;
  :math:`\sigma(x) = 1 - p_k`, :math:`\mathrm{softplus}(x) = -\log p_k`)."""
  x = math.log(K - 1) - K / (K - 1) * u
  return jax.nn.sigmoid(x) ** gamma * jax.nn.softplus(x) + tau * u


def focal_etf(K: int, n, lam_W, lam_H, gamma) -> LossETF:
  r"""The best simplex-ETF configuration of the balanced focal-loss UFM, ``d >= K-1`` (Zhou et al. 2022,
  arXiv 2210.02192, Thm. 3.1 says it is the global minimum; derivations §12.1): :math:`u^\star` minimises
  :func:`focal_etf_objective` over :math:`[0, g(0)/\tau]` (the loss is :math:`\ge 0`, so :math:`\tau u^\star \le
  g(u^\star) \le g(0)`) by a grid of 4096 points and bisection on :math:`g'` (:func:`ufm.theory._onedim.global_min_1d`);
  ``gamma = 0`` is :func:`ufm.theory.ce_balanced`. :math:`g` is not convex for ``gamma > 0``: the grid makes the
  minimum global on the ansatz."""
  check_int("K", K, lo=2)
  tau, rho = _tau_rho(K, n, lam_W, lam_H)
  u, f = _focal_min(tau, jnp.asarray(gamma, tau.dtype), K=K)
  return _finish(u, f, rho, lam_W, lam_H)


def _focal_min_impl(tau, gamma, *, K):
  g0 = focal_etf_objective(jnp.zeros_like(tau), K, tau, gamma)
  hi = g0 / jnp.where(tau > 0, tau, 1.0)
  # global_min_1d takes a static upper end: rescale u = hi * v, v in [0, 1].
  u, f = global_min_1d(lambda v: focal_etf_objective(hi * v, K, tau, gamma), hi=1.0)
  return hi * u, f


_focal_min = jax.jit(_focal_min_impl, static_argnames=("K",))


class RescaledMSEMinimiser(NamedTuple):
  r"""Global minimiser of the balanced rescaled-MSE UFM. Class-level logits :math:`\bar Z = W\bar H =
  a I + c J` (``logits_M``, ``K x K``; with a bias the logits are :math:`\bar Z + b\mathbf 1^\top`, ``b`` =
  ``b_value`` times :math:`\mathbf 1`), ``objective``, the Grams ``gram_W`` :math:`= |\bar Z|/\rho` and ``gram_M``
  :math:`= \rho|\bar Z|` (:math:`\rho = \sqrt{\lambda_W/(n\lambda_H)}`), and ``rank`` of :math:`\bar Z`."""
  a: jax.Array
  c: jax.Array
  b_value: jax.Array
  objective: jax.Array
  logits_M: jax.Array
  gram_W: jax.Array
  gram_M: jax.Array
  rank: jax.Array


def rescaled_mse_minimiser(K: int, n, lam_W, lam_H, kappa, M, *, bias: bool) -> RescaledMSEMinimiser:
  r"""Global minimiser of the balanced rescaled-MSE UFM (loss :func:`ufm.loss_family.rescaled_mse`; Hui & Belkin
  2021, arXiv 2006.07322; in the loss family of Zhou et al. 2022, arXiv 2210.02192). Derived in derivations §12.3.

  The loss is convex in the logits, so (NC1 and the balanced factorisation) the problem is the convex
  :math:`\min_{\bar Z}\frac1K\sum_k\ell(\bar Z_{:k}, k) + \frac\tau K\|\bar Z\|_*`, whose minimiser may be taken
  permutation-symmetric, :math:`\bar Z = aI + cJ` (eigenvalues :math:`a` on :math:`\mathbf 1^\perp`,
  :math:`e = a + Kc` on :math:`\mathbf 1`); the per-class loss is :math:`\frac12[\kappa(a + c - M)^2 + (K-1)c^2]`.

  * ``bias=True`` (unregularised): the bias carries the :math:`\mathbf 1` direction for free, :math:`e = 0` (a
    simplex ETF, as the theorem says), :math:`a^\star = \max(0, M - \frac\tau K\frac{\kappa+K-1}{\kappa})`,
    bias :math:`b = (c' + a/K)\mathbf 1` with :math:`c' = \kappa(M - a)/(\kappa + K - 1)`, and
    :math:`f^\star = \frac{q}{2}(a^\star - M)^2 + \frac{\tau(K-1)}{K}a^\star`, :math:`q = \frac{\kappa(K-1)}{\kappa+K-1}`;
  * ``bias=False``: an orthogonal frame, :math:`c = 0`, :math:`a^\star = \max(0, M - \tau/\kappa)`,
    :math:`f^\star = \frac\kappa2(a^\star - M)^2 + \tau a^\star` (at :math:`\bar Z = aI`, :math:`a > 0`, the
    nuclear norm has the gradient :math:`I` and the loss the gradient :math:`\frac\kappa K(a - M)I`: they cancel,
    and the problem is convex; at :math:`\bar Z = 0` the subgradient condition is :math:`\kappa M \le \tau`).
    ``kappa = M = 1`` is plain MSE's :math:`a = 1 - \tau`.
  """
  check_int("K", K, lo=2)
  tau, rho = _tau_rho(K, n, lam_W, lam_H)
  kappa, M = jnp.asarray(kappa, tau.dtype), jnp.asarray(M, tau.dtype)
  s = tau / K
  eye, J = jnp.eye(K, dtype=tau.dtype), jnp.ones((K, K), tau.dtype)
  if bias:
    a = jnp.maximum(0.0, M - s * (kappa + K - 1) / kappa)
    q = kappa * (K - 1) / (kappa + K - 1)
    f = 0.5 * q * (a - M) ** 2 + s * (K - 1) * a
    cp = kappa * (M - a) / (kappa + K - 1)
    c, bval = -a / K, cp + a / K
    absZ = a * (eye - J / K)
    rank = jnp.where(a > 0, K - 1, 0)
  else:
    a = jnp.maximum(0.0, M - tau / kappa)
    f = 0.5 * kappa * (a - M) ** 2 + tau * a
    c, bval = jnp.zeros_like(a), jnp.zeros_like(a)
    absZ = a * eye
    rank = jnp.where(a > 0, K, 0)
  Z = a * eye + c * J
  return RescaledMSEMinimiser(a=a, c=c, b_value=bval, objective=f, logits_M=Z, gram_W=absZ / rho,
                              gram_M=rho * absZ, rank=rank)


# ------------------------------------------------------------------ predictions


def _scalar(problem, name: str, default=None) -> float:
  v = np.asarray(getattr(problem, name, default))
  if v.ndim:
    raise ValueError(f"{name} has shape {v.shape}; predict takes one problem (scalar leaves). For a batch, vmap "
                     "ufm.theory.label_smoothing_etf / focal_etf / rescaled_mse_minimiser instead.")
  return float(v)


def _loss_param(problem, name: str) -> float:
  """The loss parameter ``name`` of ``problem`` (a :class:`ufm.loss_problem.LossProblem` leaf), or its registered
  default (a :class:`ufm.problem.Problem` with a parametrised loss uses the defaults)."""
  from ufm import losses
  default = {p.name: p.default for p in losses.get(problem.loss).params}[name]
  return _scalar(problem, name, default)


def _balanced_checks(problem, need_d: int):
  lam_W, lam_H, lam_b = (_scalar(problem, k) for k in ("lam_W", "lam_H", "lam_b"))
  if lam_W <= 0 or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W:g}, lam_H = {lam_H:g}: a minimiser is attained only for lam_W > 0 "
                            "and lam_H > 0")
  if not problem.balanced:
    raise NoClosedFormError(f"counts = {problem.counts}: the closed forms of the loss family are for balanced "
                            "counts")
  if problem.d < need_d:
    raise NoClosedFormError(f"d = {problem.d} < {need_d}: the minimiser needs rank {need_d} (allowed range for a "
                            f"prediction: d >= {need_d})")
  return lam_W, lam_H, lam_b


def _softmax_prediction(problem, sol: LossETF, source: str) -> Prediction:
  K = problem.K
  u, t, rho, f = (float(x) for x in (sol.u, sol.norm_w_sq, sol.ratio, sol.objective))
  G = (K / (K - 1)) * (np.eye(K) - 1.0 / K)
  b_undetermined = problem.bias and _scalar(problem, "lam_b") == 0
  b = np.full(K, np.nan) if b_undetermined else np.zeros(K)
  alive = u > 0
  metrics = balanced_metric_targets(K, etf_W=True, orthogonal_W=False) if alive else {}
  if alive and not b_undetermined:
    metrics["bias_relation"] = 0.0
  return Prediction(geometry="simplex ETF" if alive else "zero", source=source, objective=f, norm_W_sq=K * t,
                    norm_H_sq=problem.N * rho**2 * t, norm_b=float("nan") if b_undetermined else 0.0,
                    gram_W=t * G, gram_M=rho**2 * t * G, logits_M=rho * t * G, b=b, metrics=metrics)


@register_prediction("plain", "label_smoothing")
def predict_plain_label_smoothing(problem) -> Prediction:
  r"""The balanced label-smoothing UFM, ``d >= K-1`` (bias-free or with a bias): the simplex ETF of
  :func:`label_smoothing_etf` (Zhou et al. 2022, arXiv 2210.02192, Thm. 3.1), or zero when
  :math:`\tau + \alpha \ge 1`. Raises :class:`NoClosedFormError` for imbalanced counts, ``d < K-1`` or a zero
  weight decay."""
  lam_W, lam_H, _ = _balanced_checks(problem, problem.K - 1)
  sol = label_smoothing_etf(problem.K, problem.counts[0], lam_W, lam_H, _loss_param(problem, "alpha"))
  return _softmax_prediction(problem, sol, SOURCE + "; norm in closed form, ufm.theory.label_smoothing_etf")


@register_prediction("plain", "focal")
def predict_plain_focal(problem) -> Prediction:
  r"""The balanced focal-loss UFM, ``d >= K-1``: the best simplex ETF (:func:`focal_etf`), which Zhou et al. 2022
  (arXiv 2210.02192, Thm. 3.1) say is the global minimum. Raises :class:`NoClosedFormError` as
  :func:`predict_plain_label_smoothing`."""
  lam_W, lam_H, _ = _balanced_checks(problem, problem.K - 1)
  sol = focal_etf(problem.K, problem.counts[0], lam_W, lam_H, _loss_param(problem, "gamma"))
  return _softmax_prediction(problem, sol, SOURCE + "; norm by a 1-D minimisation, ufm.theory.focal_etf")


@register_prediction("plain", "rescaled_mse")
def predict_plain_rescaled_mse(problem) -> Prediction:
  r"""The balanced rescaled-MSE UFM (:func:`rescaled_mse_minimiser`): bias-free (any ``d`` at least the rank of the
  minimiser) or with an unregularised bias (a simplex ETF, ``d >= K-1``). Raises :class:`NoClosedFormError` for
  imbalanced counts, a regularised bias, ``d`` below the minimiser's rank, or a zero weight decay."""
  K = problem.K
  lam_W, lam_H, lam_b = _balanced_checks(problem, 1)
  if problem.bias and lam_b > 0:
    raise NoClosedFormError(f"lam_b = {lam_b:g} > 0: the rescaled-MSE closed form covers no bias or an "
                            "unregularised bias (lam_b = 0)")
  kappa, M = _loss_param(problem, "kappa"), _loss_param(problem, "M")
  sol = jax.tree.map(lambda x: np.asarray(x, np.float64),
                     rescaled_mse_minimiser(K, problem.counts[0], lam_W, lam_H, kappa, M, bias=problem.bias))
  rank = int(sol.rank)
  if problem.d < rank:
    raise NoClosedFormError(f"d = {problem.d} is below the rank {rank} of the minimiser; allowed range for a "
                            f"prediction: d >= {rank}")
  n = problem.counts[0]
  rho = math.sqrt(lam_W / (n * lam_H))
  if rank == 0:
    geometry, metrics = "zero", {}
  elif problem.bias:
    geometry, metrics = "simplex ETF", balanced_metric_targets(K, etf_W=True, orthogonal_W=False)
  else:
    geometry, metrics = "orthogonal frame", balanced_metric_targets(K, etf_W=False, orthogonal_W=True)
  b = np.full(K, float(sol.b_value))
  tr = float(np.trace(sol.gram_W))
  return Prediction(geometry=geometry, source=("Hui & Belkin 2021 (arXiv 2006.07322) loss; " + SOURCE +
                                               " (the ETF with a bias); minimiser of the convex nuclear-norm "
                                               "reduction in ufm.theory.rescaled_mse_minimiser"),
                    objective=float(sol.objective), norm_W_sq=tr, norm_H_sq=n * rho**2 * tr,
                    norm_b=float(np.linalg.norm(b)), gram_W=sol.gram_W, gram_M=sol.gram_M, logits_M=sol.logits_M,
                    b=b, metrics=metrics)
