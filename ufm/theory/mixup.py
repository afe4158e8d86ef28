r"""The mixup UFM with a fixed simplex-ETF classifier: the optimal mixed feature, its confidence, same-class scale.

Fisher, Meng, Papyan (ICLR 2024), "Pushing Boundaries: Mixup's Influence on Neural Collapse", arXiv 2402.06171,
Sec. 3 ("Unconstrained features model for mixup"). The paper's exact objective was not available to us
(derivations §2.1, §9.6); what follows is derived (derivations §11 Part B) for the per-(pair, lambda) problem

.. math:: g(h) = \lambda\,\mathrm{CE}(Wh, c) + (1 - \lambda)\,\mathrm{CE}(Wh, c') + \frac{\mu}{2}\|h\|^2,

``W`` fixed, rows :math:`w_k` of norm :math:`\rho` forming a simplex ETF; ``lam_H`` below is :math:`\mu`.
:mod:`ufm.mixup` builds objectives whose per-node feature problem is exactly ``g`` with :math:`\mu` = ``lam_H``.
Sections cited as "derivations §x" are in ``ufm/theory/derivations.md``.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory.prediction import NoClosedFormError
from ufm.validate import check_int

__all__ = [
    "MixupFeature",
    "mixup_confidence",
    "mixup_kappa",
    "mixup_optimal_feature",
    "mixup_same_class_scale",
]

# The losses these closed forms are derived for.
_MIXUP_LOSSES = ("ce", "mse")

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
  check_int("K", K, lo=2)
  if loss not in _MIXUP_LOSSES:
    raise NoClosedFormError(f"loss = {loss!r} is not supported by the mixup closed forms; allowed values: "
                            f"{', '.join(_MIXUP_LOSSES)}")
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
  ``g`` gives the logits :math:`z = Wh = \kappa\,(y - p)` (derivations §11 B.1). The logit margins
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
  2402.06171, Sec. 3; derivations §9.6). By the ETF symmetry :math:`h = a w_c`, and with the margin
  :math:`u = \beta a` (:func:`mixup_kappa`) stationarity reads (derivations §11 B.1)

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

  Fisher, Meng, Papyan (ICLR 2024, arXiv 2402.06171), Sec. 3; derived in derivations §2.3 and §11 Part B (the
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
  :math:`2u(2e^u + K - 2) = \kappa K` (derivations §11 B.1); the interpolated plain-CE features
  (``mixup=False``) stay confident except near :math:`\lambda = 1/2`.
  """
  return mixup_optimal_feature(lam, K, lam_H=lam_H, rho=rho, loss=loss, mixup=mixup).confidence
