r"""Convex reference for the imbalanced cross-entropy UFM, SELI Grams and minority-collapse statistics.

**Derivation (our normalisation, :mod:`ufm.objectives`).** Let :math:`n_k` be the class counts,
:math:`N = \sum_k n_k`, :math:`D = \mathrm{diag}(n_k)`, :math:`\mu = \sqrt{\lambda_W\lambda_H}` and

.. math::
   f(W, H, b) = \frac1N \sum_{k}\sum_{i=1}^{n_k} \ell_k(W h_{k,i} + b)
   + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|^2,
   \qquad \ell_k(z) = \log\textstyle\sum_j e^{z_j} - z_k .

1. *Collapse.* For fixed ``(W, b)`` the terms of class ``k`` are convex in each :math:`h_{k,i}`
   and identical across ``i``; by Jensen, replacing every :math:`h_{k,i}` by the class mean
   :math:`\bar h_k` does not increase ``f`` (the loss by convexity, :math:`\sum_i\|h_{k,i}\|^2 \ge
   n_k\|\bar h_k\|^2`). So :math:`\min f = \min_{W,\bar H,b} \sum_k \frac{n_k}{N}\ell_k(W\bar h_k + b)
   + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|\bar H D^{1/2}\|_F^2 + \frac{\lambda_b}{2}\|b\|^2`.
2. *Variational nuclear norm.* With :math:`G = \bar H D^{1/2}` and :math:`X = W G = Z D^{1/2}`
   (:math:`Z = W\bar H`, the class-level logits), for ``d >= rank X``
   :math:`\min_{WG = X} \frac{a}{2}\|W\|_F^2 + \frac{c}{2}\|G\|_F^2 = \sqrt{ac}\,\|X\|_*` (AM-GM on the
   scale of ``W``, then :math:`\min_{WG=X}\|W\|_F\|G\|_F = \|X\|_*`, attained at
   :math:`W = (c/a)^{1/4} U S^{1/2}`, :math:`G = (a/c)^{1/4} S^{1/2} V^\top` for :math:`X = USV^\top`).
   Hence, exactly when ``d >= rank X*`` (always when ``d >= K``),

   .. math::
      \min f = \min_{X\in\mathbb R^{K\times K},\, b}\; F(X, b) = s(X, b) + \mu\|X\|_*, \qquad
      s(X, b) = \sum_k \frac{n_k}{N}\,\ell_k\!\Big(\frac{X_{:,k}}{\sqrt{n_k}} + b\Big) + \frac{\lambda_b}{2}\|b\|^2,

   i.e. :math:`\mu\|Z D^{1/2}\|_*`: the nuclear norm weighted by the square roots of the class sizes.
   Without a bias ``b = 0``; with ``lam_b = 0`` the bias is free. For *any* ``(W, H, b)``,
   :math:`f(W, H, b) \ge \min F`, so a non-convex solve is certified globally optimal when its
   objective meets ``min F``.
3. *Recovery.* :math:`WW^\top = \sqrt{\lambda_H/\lambda_W}\,(XX^\top)^{1/2}` and
   :math:`\bar H^\top\bar H = \sqrt{\lambda_W/\lambda_H}\,D^{-1/2}(X^\top X)^{1/2}D^{-1/2}`.

**Solver.** FISTA (Beck & Teboulle 2009) with the gradient adaptive restart of O'Donoghue & Candès
(2015) on ``(X, b)``; the prox of :math:`\mu\|\cdot\|_*` is singular-value soft thresholding
(Cai, Candès & Shen 2010). Steps from the curvature bound :math:`\nabla^2\ell_k \preceq \frac12 I`:
:math:`\frac12\delta^\top\nabla^2 s\,\delta \le \frac1N\|\delta X\|_F^2 + (1 + \frac{\lambda_b}{2})\|\delta b\|^2`,
so :math:`t_X = N/2`, :math:`t_b = 1/(2 + \lambda_b)` (a diagonal metric; the prox acts on ``X`` only).

**Certificate.** ``kkt``: the prox-gradient fixed-point residual
:math:`\|(X - \mathrm{prox}_{t\mu}(X - t\nabla_X s))/t,\ \nabla_b s\| / \mu` (zero iff
:math:`0 \in \nabla s + \mu\,\partial\|X\|_*`, dimensionless). The subgradient condition
:math:`-\nabla_X s/\mu = U_rV_r^\top + M` with :math:`U_r^\top M = 0`, :math:`MV_r = 0`,
:math:`\|M\|_2 \le 1` is reported on the singular subspaces of ``X`` (``subgrad_range``,
``subgrad_cross``, ``subgrad_excess``).

Contract: pure functions; :func:`ce_convex` validates in Python and runs one jitted, vmapped
program over any leading batch axes of ``counts`` and the weight decays (counts may be real: the
convex problem is defined for any positive class weights). :func:`convex_reference` has the solver
signature of :mod:`ufm.solvers` so that :func:`ufm.sweep.sweep` sweeps it over weight decays.
Nothing raises inside the program; non-finite iterates stop the run and set ``diverged``.

Sources: Zhu et al. 2021 (arXiv 2105.02375) for the reduction idea; Hong & Ling 2023
(arXiv 2309.09725), who solve the same convex program with cvxpy; ``ufm/theory/derivations.md`` §5.5, §5.6,
§9.3, §9.4 (the sections below cite it as "derivations").
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.problem import Params, Problem, make_labels
from ufm.validate import check_real

__all__ = [
    "ConvexHparams",
    "ConvexSolution",
    "ce_convex",
    "classifier_factor",
    "classifier_gram",
    "convex_hparams",
    "convex_reference",
    "feature_mean_gram",
    "gram_distance",
    "minority_stats",
    "seli_grams",
    "ufm_params",
]


class ConvexHparams(NamedTuple):
  """Knobs of the convex solve (array leaves, so a new value never recompiles): ``tol`` on the dimensionless
  KKT residual, ``rank_rtol`` for the numerical rank (singular values ``<= rank_rtol * s_max`` count as zero),
  ``max_iters`` the iteration cap."""
  tol: jax.Array
  rank_rtol: jax.Array
  max_iters: jax.Array


class ConvexSolution(NamedTuple):
  """Result of the convex reference (leading batch axes on every leaf).

  Attributes:
    X: ``Z D^{1/2}`` (``K x K``), the optimisation variable.
    Z: class-level logits ``W H̄`` (``K x K``; column ``k`` is the logit vector of class ``k`` minus ``b``).
    b: the bias (``K``; zeros without a bias).
    objective: ``min F`` = the global minimum of the UFM objective (for ``d >= rank X``).
    kkt: dimensionless prox-gradient residual (see the module docstring).
    grad_norm: alias of ``kkt`` (for :func:`experiments._common.sweep_dataset`).
    subgrad_range, subgrad_cross, subgrad_excess: the subgradient condition on the singular subspaces:
      ``||U_r^T G V_r - I||_F``, ``||U_r^T G V_perp||_F + ||U_perp^T G V_r||_F`` and ``max(0, ||U_perp^T G
      V_perp||_2 - 1)`` with ``G = -grad_X s / mu``.
    rank: numerical rank of ``X`` (the smallest ``d`` for which the reduction is exact).
    kkt_floor: the rounding level of ``kkt`` itself, ``32 eps ||X||_F / (t_X mu)`` (it exceeds ``tol`` only at
      very small ``mu``, where the logits are large).
    diverged, converged: flags (``converged``: ``kkt <= max(tol, kkt_floor)``).
    num_steps: FISTA iterations taken.
  """
  X: jax.Array
  Z: jax.Array
  b: jax.Array
  objective: jax.Array
  kkt: jax.Array
  grad_norm: jax.Array
  subgrad_range: jax.Array
  subgrad_cross: jax.Array
  subgrad_excess: jax.Array
  rank: jax.Array
  kkt_floor: jax.Array
  diverged: jax.Array
  converged: jax.Array
  num_steps: jax.Array


def convex_hparams(*, tol=1e-11, rank_rtol=1e-7, max_iters=20_000, dtype=None) -> ConvexHparams:
  """Validated :class:`ConvexHparams`: ``tol >= 0``, ``0 < rank_rtol < 1``, ``max_iters`` an integer in
  ``[1, 2**31)``."""
  dtype = dtype or jnp.result_type(float)
  if (isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer))
      or not 1 <= max_iters < 2**31):
    raise ValueError(f"max_iters = {max_iters!r} is out of range; allowed: an integer 1 <= max_iters < 2**31")
  return ConvexHparams(tol=jnp.asarray(check_real("tol", tol, lo=0.0), dtype),
                       rank_rtol=jnp.asarray(check_real("rank_rtol", rank_rtol, lo=0.0, lo_open=True, hi=1.0,
                                                        hi_open=True), dtype),
                       max_iters=jnp.asarray(max_iters, jnp.int32))


# ------------------------------------------------------------------------------------------ the program

def _class_logits(X, b, counts):
  return X / jnp.sqrt(counts)[None, :] + b[:, None]


def _smooth(X, b, counts, lam_b):
  r"""``s(X, b)``: class-weighted CE of the logits ``X_{:,k}/sqrt(n_k) + b`` plus ``lam_b/2 ||b||^2``.

  :math:`\ell_k = \mathrm{softplus}(\log\sum_{j\ne k} e^{z_j - z_k})`, accurate when the loss is tiny
  (``lse(z) - z_k`` loses every digit once it falls below ``eps``)."""
  K = X.shape[0]
  Zl = _class_logits(X, b, counts)
  margins = Zl - jnp.diagonal(Zl)[None, :]
  off = jnp.where(jnp.eye(K, dtype=bool), -jnp.inf, margins)
  ce = jax.nn.softplus(jax.nn.logsumexp(off, axis=0))
  return jnp.sum(counts / jnp.sum(counts) * ce) + 0.5 * lam_b * jnp.sum(b**2)


def _smooth_grad(X, b, counts, lam_b):
  """``(grad_X s, grad_b s)`` with the true-class entry of ``softmax - onehot`` written as minus the sum of
  the others (no cancellation when ``p_k -> 1``: the gradient keeps its relative accuracy at small loss)."""
  K = X.shape[0]
  P = jax.nn.softmax(_class_logits(X, b, counts), axis=0)
  eye = jnp.eye(K, dtype=bool)
  P_off = jnp.where(eye, 0.0, P)
  G = P_off - jnp.where(eye, jnp.sum(P_off, axis=0)[None, :], 0.0)  # column k: softmax(z_k) - e_k
  N = jnp.sum(counts)
  return G * (jnp.sqrt(counts) / N)[None, :], G @ (counts / N) + lam_b * b


def _svt(X, tau):
  U, s, Vt = jnp.linalg.svd(X)
  return (U * jnp.maximum(s - tau, 0.0)[None, :]) @ Vt


def _nuclear(X):
  return jnp.sum(jnp.linalg.svd(X, compute_uv=False))


def _solve_one(counts, lam_W, lam_H, lam_b, hp, *, bias):
  """FISTA with adaptive restart on one problem (no batch axes)."""
  K = counts.shape[0]
  dt = counts.dtype
  N = jnp.sum(counts)
  mu = jnp.sqrt(lam_W * lam_H)
  tX, tb = N / 2.0, 1.0 / (2.0 + lam_b)
  grad = _smooth_grad

  def prox_step(X, b, alpha=1.0):
    gX, gb = grad(X, b, counts, lam_b)
    Xn = _svt(X - alpha * tX * gX, alpha * tX * mu)
    bn = (b - alpha * tb * gb) if bias else b
    res = jnp.sqrt(jnp.sum(((X - Xn) / (alpha * tX))**2) + (jnp.sum(gb**2) if bias else 0.0)) / mu
    return Xn, bn, res

  def F(X, b):
    return _smooth(X, b, counts, lam_b) + mu * _nuclear(X)

  def backtrack(Y, c, alpha):
    """The largest step ``a (t_X, t_b)`` (halving from ``a = 2 alpha``) whose curvature check passes;
    ``a <= 1`` always does (the global bound), so the loop ends."""
    gX, gb = grad(Y, c, counts, lam_b)

    def trial(a):
      Xn = _svt(Y - a * tX * gX, a * tX * mu)
      bn = (c - a * tb * gb) if bias else c
      dX, db = Xn - Y, bn - c
      # curvature along the step <= 1/a in the metric diag(1/t_X, 1/t_b): the descent lemma's condition,
      # checked on gradient differences (no cancellation of nearly equal objective values)
      hX, hb = grad(Xn, bn, counts, lam_b)
      curv = jnp.sum((hX - gX) * dX) + (jnp.sum((hb - gb) * db) if bias else 0.0)
      ok = (curv * a <= jnp.sum(dX**2) / tX + jnp.sum(db**2) / tb) | (a <= 1.0)
      return Xn, bn, ok

    def bt_cond(st):
      return ~st[3]

    def bt_body(st):
      a = jnp.maximum(st[0] / 2, 1.0)
      Xn, bn, ok = trial(a)
      return a, Xn, bn, ok

    a0 = 2.0 * alpha
    Xn, bn, ok = trial(a0)
    a, Xn, bn, _ = jax.lax.while_loop(bt_cond, bt_body, (a0, Xn, bn, ok))
    return Xn, bn, a

  X0, b0 = jnp.zeros((K, K), dt), jnp.zeros((K,), dt)
  init = dict(X=X0, b=b0, Y=X0, c=b0, theta=jnp.ones((), dt), alpha=jnp.ones((), dt), k=jnp.zeros((), jnp.int32),
              res=jnp.full((), jnp.inf, dt), bad=jnp.zeros((), bool))

  def floor(X):
    """Rounding level of the residual itself: ``X - prox(X - t grad)`` is computed to ``eps ||X||``."""
    return 32.0 * jnp.finfo(dt).eps * jnp.linalg.norm(X) / (tX * mu)

  def cond(s):
    return (s["k"] < hp.max_iters) & (s["res"] > jnp.maximum(hp.tol, floor(s["X"]))) & ~s["bad"]

  def body(s):
    Xn, bn, alpha = backtrack(s["Y"], s["c"], s["alpha"])
    _, _, res = prox_step(Xn, bn)  # the certificate at the new iterate itself (unit step), the stopping rule
    bad = ~(jnp.all(jnp.isfinite(Xn)) & jnp.all(jnp.isfinite(bn)) & jnp.isfinite(res))
    # gradient restart (O'Donoghue & Candès 2015): drop the momentum when it points uphill
    restart = (jnp.sum((s["Y"] - Xn) * (Xn - s["X"])) / tX + jnp.sum((s["c"] - bn) * (bn - s["b"])) / tb) > 0
    theta = jnp.where(restart, 1.0, s["theta"])
    theta_n = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * theta**2))
    beta = jnp.where(restart, 0.0, (theta - 1.0) / theta_n)
    Yn, cn = Xn + beta * (Xn - s["X"]), bn + beta * (bn - s["b"])
    new = dict(X=Xn, b=bn, Y=Yn, c=cn, theta=theta_n, alpha=alpha, k=s["k"] + 1, res=res, bad=bad)
    return jax.tree.map(lambda a, o: jnp.where(bad, o, a), new, s) | dict(bad=bad, k=jnp.where(bad, s["k"], s["k"] + 1))

  s = jax.lax.while_loop(cond, body, init)
  X, b = s["X"], s["b"]
  _, _, kkt = prox_step(X, b)
  gX, _ = grad(X, b, counts, lam_b)
  U, sv, Vt = jnp.linalg.svd(X)
  m = sv > hp.rank_rtol * jnp.maximum(sv[0], jnp.finfo(dt).tiny)
  A = U.T @ (-gX / mu) @ Vt.T
  mm, mo = m[:, None] & m[None, :], m[:, None] & ~m[None, :]
  sub_range = jnp.sqrt(jnp.sum(jnp.where(mm, A - jnp.eye(K, dtype=dt), 0.0)**2))
  sub_cross = jnp.sqrt(jnp.sum(jnp.where(mo, A, 0.0)**2)) + jnp.sqrt(jnp.sum(jnp.where(mo.T, A, 0.0)**2))
  off = jnp.where(~m[:, None] & ~m[None, :], A, 0.0)
  sub_excess = jnp.maximum(jnp.linalg.svd(off, compute_uv=False)[0] - 1.0, 0.0)
  diverged = s["bad"] | ~jnp.isfinite(kkt)
  return ConvexSolution(X=X, Z=X / jnp.sqrt(counts)[None, :], b=b, objective=F(X, b), kkt=kkt, grad_norm=kkt,
                        subgrad_range=sub_range, subgrad_cross=sub_cross, subgrad_excess=sub_excess,
                        rank=jnp.sum(m).astype(jnp.int32), diverged=diverged,
                        kkt_floor=floor(X), converged=~diverged & (kkt <= jnp.maximum(hp.tol, floor(X))),
                        num_steps=s["k"])


@functools.partial(jax.jit, static_argnames=("bias",))
def _solve_batched(counts, lam_W, lam_H, lam_b, hp, *, bias):
  fn = functools.partial(_solve_one, bias=bias)
  return jax.vmap(fn, in_axes=(0, 0, 0, 0, None))(counts, lam_W, lam_H, lam_b, hp)


def _check_bias(bias):
  if not isinstance(bias, (bool, np.bool_)):
    raise ValueError(f"bias = {bias!r} is not a boolean; allowed values: True, False")


def _hparams(hparams, max_iters, dtype) -> ConvexHparams:
  hp = convex_hparams(dtype=dtype) if hparams is None else hparams
  if max_iters is not None:
    hp = hp._replace(max_iters=convex_hparams(max_iters=max_iters).max_iters)
  return ConvexHparams(tol=jnp.asarray(hp.tol, dtype), rank_rtol=jnp.asarray(hp.rank_rtol, dtype),
                       max_iters=jnp.asarray(hp.max_iters, jnp.int32))


def ce_convex(counts, lam_W, lam_H, lam_b=0.0, *, bias=True, hparams=None, max_iters=None,
              dtype=None) -> ConvexSolution:
  r"""Global minimum of the CE-UFM through its convex reformulation (module docstring), batched.

  .. math:: \min_{X, b}\ \sum_k \frac{n_k}{N}\,\ell_k\big(X_{:,k}/\sqrt{n_k} + b\big)
            + \frac{\lambda_b}{2}\|b\|^2 + \sqrt{\lambda_W\lambda_H}\,\|X\|_*, \qquad X = W\bar H D^{1/2}.

  Args:
    counts: class counts, shape ``(..., K)``, ``K >= 2``, each finite and ``> 0`` (real values allowed).
    lam_W, lam_H: weight decays ``> 0`` (shape broadcastable with ``counts[..., 0]``).
    lam_b: bias decay ``>= 0`` (``0`` = free bias); must be 0 when ``bias=False``.
    bias: whether the classifier has a bias (static).
    hparams: :class:`ConvexHparams` (default :func:`convex_hparams`).
    max_iters: FISTA iteration cap (overrides ``hparams.max_iters``; not static: no recompilation).
    dtype: float dtype (default: JAX's default float; use float64 for certificates).

  Returns:
    :class:`ConvexSolution` with the common batch shape of the inputs as leading axes.

  Raises:
    ValueError: naming the parameter and its allowed range (before anything compiles).
  """
  _check_bias(bias)
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  hp = _hparams(hparams, max_iters, dtype)
  c = check_real("counts", counts, lo=0.0, lo_open=True)
  if c.ndim < 1 or c.shape[-1] < 2:
    raise ValueError(f"counts has shape {c.shape}; allowed: (..., K) with K >= 2 classes")
  lw = check_real("lam_W", lam_W, lo=0.0, lo_open=True)
  lh = check_real("lam_H", lam_H, lo=0.0, lo_open=True)
  lb = check_real("lam_b", lam_b, lo=0.0)
  if not bias and np.any(lb != 0):
    raise ValueError(f"lam_b = {lb.tolist()!r} has no effect without a bias; allowed: lam_b = 0 when bias=False")
  try:
    batch = np.broadcast_shapes(c.shape[:-1], lw.shape, lh.shape, lb.shape)
  except ValueError:
    raise ValueError(f"counts {c.shape}, lam_W {lw.shape}, lam_H {lh.shape}, lam_b {lb.shape}: allowed: batch "
                     "shapes that broadcast (counts carries a trailing class axis)") from None
  K = c.shape[-1]
  size = int(np.prod(batch, dtype=int))
  padded = max(16, 1 << (size - 1).bit_length())  # few batch sizes, hence few compilations (extra rows: copies)

  def flat(a, tail=()):
    a = np.broadcast_to(a, batch + tail).reshape((size,) + tail)
    return jnp.asarray(np.concatenate([a, np.repeat(a[-1:], padded - size, axis=0)]), dtype)
  sol = _solve_batched(flat(c, (K,)), flat(lw), flat(lh), flat(lb), hp, bias=bool(bias))
  return jax.tree.map(lambda x: x[:size].reshape(batch + x.shape[1:]), sol)


@jax.jit
def _reference_jit(problem, hparams):
  counts = jnp.asarray(problem.counts, problem.dtype)
  lam_b = problem.lam_b if problem.bias else jnp.zeros((), problem.dtype)
  return _solve_one(counts, problem.lam_W, problem.lam_H, lam_b, hparams, bias=problem.bias)


def convex_reference(key: jax.Array, problem: Problem, hparams: ConvexHparams) -> ConvexSolution:
  """:func:`ce_convex` with the solver signature of :mod:`ufm.solvers` (``key`` is unused: the solve is
  deterministic), so that :func:`ufm.sweep.sweep` can vmap it over ``lam_W``, ``lam_H``, ``lam_b``.
  Needs ``problem.loss == "ce"`` and ``lam_W, lam_H > 0`` (checked where concrete)."""
  del key
  if problem.loss != "ce":
    raise ValueError(f"loss = {problem.loss!r}: the convex reference is for loss = 'ce' only")
  for name in ("lam_W", "lam_H"):
    v = getattr(problem, name)
    if not isinstance(v, jax.core.Tracer):
      check_real(name, v, lo=0.0, lo_open=True)
  problem = problem.replace(**{k: jnp.asarray(getattr(problem, k), problem.dtype) for k in ("lam_W", "lam_H", "lam_b")})
  return _reference_jit(problem, _hparams(hparams, None, problem.dtype))


# ------------------------------------------------------------------------------------------ geometry

def _psd_sqrt(S):
  """Square root of a PSD matrix; eigenvalues below ``64 eps`` of the largest are rounding noise of a zero
  eigenvalue and are set to 0 (their square root would be ~sqrt(eps), not ~eps)."""
  w, V = jnp.linalg.eigh(0.5 * (S + S.T))
  w = jnp.where(w > 64 * jnp.finfo(w.dtype).eps * jnp.max(jnp.abs(w)), w, 0.0)
  return (V * jnp.sqrt(w)[None, :]) @ V.T


def classifier_gram(X, lam_W, lam_H):
  r""":math:`WW^\top = \sqrt{\lambda_H/\lambda_W}\,(XX^\top)^{1/2}` at the minimiser (derivation step 3)."""
  return jnp.sqrt(lam_H / lam_W) * _psd_sqrt(X @ X.T)


def feature_mean_gram(X, counts, lam_W, lam_H):
  r""":math:`\bar H^\top\bar H = \sqrt{\lambda_W/\lambda_H}\,D^{-1/2}(X^\top X)^{1/2}D^{-1/2}` (derivation step 3)."""
  r = 1.0 / jnp.sqrt(counts)
  return jnp.sqrt(lam_W / lam_H) * r[:, None] * _psd_sqrt(X.T @ X) * r[None, :]


def seli_grams(counts) -> tuple[jax.Array, jax.Array]:
  r"""SELI Grams (Thrampoulidis et al. 2022, arXiv 2208.05512, Definition 2; derivations §5.6, §9.3),
  Frobenius-normalised, for class counts ``n_k`` (``A = I - 11^T/K``, ``D = diag(n_k)``):

  .. math:: \frac{WW^\top}{\|\cdot\|_F} = \frac{(ADA)^{1/2}}{\|\cdot\|_F}, \qquad
            \frac{\bar H^\top\bar H}{\|\cdot\|_F} = \frac{D^{-1/2}(D^{1/2}AD^{1/2})^{1/2}D^{-1/2}}{\|\cdot\|_F}.

  These are the SVD factors of the SEL matrix :math:`\hat Z = AY` reduced to class level
  (:math:`\hat Z\hat Z^\top = ADA`; :math:`\hat Z^\top\hat Z` restricted to class means is
  :math:`D^{-1/2}(\cdot)D^{-1/2}` of :math:`D^{1/2}AD^{1/2}`). With equal counts both are the
  normalised simplex-ETF Gram :math:`A/\sqrt{K-1}`. Pure and vmappable; ``counts`` is ``(K,)``.
  """
  counts = jnp.asarray(counts)
  K = counts.shape[-1]
  A = jnp.eye(K, dtype=counts.dtype) - 1.0 / K
  GW = _psd_sqrt(A @ (counts[:, None] * A))
  r = jnp.sqrt(counts)
  GH = _psd_sqrt(r[:, None] * A * r[None, :]) / (r[:, None] * r[None, :])
  return GW / jnp.linalg.norm(GW), GH / jnp.linalg.norm(GH)


def gram_distance(G, T):
  """``|| G/||G||_F - T/||T||_F ||_F``: distance between Frobenius-normalised Grams (derivations §5.6)."""
  return jnp.linalg.norm(G / jnp.linalg.norm(G) - T / jnp.linalg.norm(T))


def classifier_factor(X, lam_W, lam_H):
  r"""Rows of a minimising classifier, :math:`W = (\lambda_H/\lambda_W)^{1/4} U S^{1/2}` (``K x K``, for
  :math:`X = USV^\top`; unique up to a rotation :math:`W \to WQ`). More accurate than a square root of
  :func:`classifier_gram` for rows that vanish or coincide (their differences are ~eps, not ~sqrt(eps): singular
  values below ``64 eps s_max`` are rounding noise of zeros and are set to 0)."""
  U, s, _ = jnp.linalg.svd(X)
  s = jnp.where(s > 64 * jnp.finfo(s.dtype).eps * s[0], s, 0.0)  # rounding noise of a zero singular value
  return (lam_H / lam_W)**0.25 * U * jnp.sqrt(s)[None, :]


def minority_stats(W, K_A: int, *, coincide_rtol: float = 1e-6, coincide_atol: float = 1e-6) -> dict:
  r"""Minority-collapse statistics of classifier rows ``W`` (``K x d``) with majority classes ``0..K_A-1``
  (Fang et al. 2021, arXiv 2101.12699, Thm. 5 and Finding 2; derivations §5.5, §9.4).

  Returns (pure, vmappable): the mean cosine between distinct minority classifiers ``cos_minor``; the
  largest minority-pair distance relative to the mean majority norm,
  :math:`\max_{k\ne k'}\|w_k - w_{k'}\| / \text{mean}_{j\le K_A}\|w_j\|` (``spread_minor``, 0 iff the
  minority classifiers coincide); the mean minority and majority norms ``norm_minor``, ``norm_major``;
  the mean majority-minority cosine ``cos_major_minor`` and majority-majority cosine ``cos_major``.
  Conventions where a cosine is undefined: a row with :math:`\|w_k\| \le \epsilon =`
  ``max(coincide_rtol * norm_major, coincide_atol)`` counts as zero and its cosines as 0 (so
  ``cos_major_minor = 0`` once the minority classifiers vanish); minority classifiers that coincide
  (:math:`\max\|w_k - w_{k'}\| \le \epsilon`, including all of them zero) have ``cos_minor = 1``. The absolute
  floor covers the all-zero minimiser and iterates of an iterative solver, whose vanishing rows are only
  ~``gtol`` small.
  """
  K = W.shape[-2]
  if not 1 <= K_A <= K - 2:
    raise ValueError(f"K_A = {K_A} is out of range; allowed: 1 <= K_A <= K - 2 = {K - 2} (two minority classes)")
  tiny = jnp.finfo(W.dtype).tiny
  nrm = jnp.linalg.norm(W, axis=-1)
  G = W @ W.T
  C = G / jnp.maximum(nrm[:, None] * nrm[None, :], tiny)
  minor, major = np.arange(K) >= K_A, np.arange(K) < K_A
  off = ~np.eye(K, dtype=bool)
  mm, aa = minor[:, None] & minor[None, :] & off, major[:, None] & major[None, :] & off
  am = major[:, None] & minor[None, :]
  diff = jnp.linalg.norm(W[:, None, :] - W[None, :, :], axis=-1)
  mean = lambda M, mask: jnp.sum(jnp.where(mask, M, 0.0)) / max(int(mask.sum()), 1)
  norm_major = jnp.mean(nrm[:K_A])
  max_diff = jnp.max(jnp.where(mm, diff, 0.0))
  spread = max_diff / jnp.maximum(norm_major, tiny)
  eps = jnp.maximum(coincide_rtol * norm_major, coincide_atol)
  zero = nrm <= eps
  C = jnp.where(zero[:, None] | zero[None, :], 0.0, C)
  return {
      "cos_minor": jnp.where(max_diff <= eps, 1.0, mean(C, mm)),
      "spread_minor": spread,
      "norm_minor": jnp.mean(nrm[K_A:]),
      "norm_major": norm_major,
      "cos_major_minor": mean(C, am),
      "cos_major": mean(C, aa) if K_A > 1 else jnp.asarray(jnp.nan, W.dtype),
  }


def ufm_params(sol: ConvexSolution, problem: Problem) -> Params:
  r"""A UFM minimiser (``W``, ``H``, ``b``) of ``problem`` built from an unbatched convex solution:
  :math:`W = (\lambda_H/\lambda_W)^{1/4} U S^{1/2}`, :math:`\bar H = (\lambda_W/\lambda_H)^{1/4} S^{1/2}
  V^\top D^{-1/2}`, every feature at its class mean; the first ``d`` singular directions are kept, so the
  objective equals ``sol.objective`` when ``problem.d >= sol.rank``."""
  counts = jnp.asarray(problem.counts, problem.dtype)
  U, s, Vt = jnp.linalg.svd(sol.X)
  q = (problem.lam_H / problem.lam_W)**0.25
  W = q * U * jnp.sqrt(s)[None, :]
  Hbar = (jnp.sqrt(s)[:, None] * Vt) / (q * jnp.sqrt(counts)[None, :])
  K, d = problem.K, problem.d
  if d >= K:
    W = jnp.pad(W, ((0, 0), (0, d - K)))
    Hbar = jnp.pad(Hbar, ((0, d - K), (0, 0)))
  else:
    W, Hbar = W[:, :d], Hbar[:d]
  Y = make_labels(problem.counts, problem.dtype)
  b = sol.b if problem.bias else jnp.zeros_like(sol.b)
  return Params(W=W, H=Hbar @ Y, b=b)
