r"""Reference geometries for ``K > d + 1`` and fixed classifiers.

Columns of a ``d x K`` matrix ``X`` are ``K`` points of the unit sphere :math:`S^{d-1}`.

**Reference geometries** (no simplex ETF exists once ``K > d + 1``):

* :func:`softmax_code`: maximise the minimal one-vs-rest distance
  :math:`\rho(X) = \min_k \operatorname{dist}(x_k, \operatorname{conv}\{x_j : j \ne k\})`
  (Jiang et al. 2024, "Generalized Neural Collapse for a Large Number of Classes", arXiv 2310.05351,
  Def. of the softmax code and Thm. on the :math:`\tau \to 0` limit of the spherical CE-UFM);
* :func:`minimal_energy`: minimise the Riesz energy :math:`\sum_{i<j}\|x_i - x_j\|^{-s}` (``s > 0``;
  ``s = 1`` in ``d = 3`` is Thomson's problem) or the logarithmic energy
  :math:`\sum_{i<j}\log(1/\|x_i - x_j\|)` (``s = 0``), whose average over pairs is GNC2, the
  hyperspherical uniformity of Liu et al. 2023 (arXiv 2303.06484) used by Wu & Papyan 2024
  (arXiv 2405.17767). ``ufm/theory/derivations.md`` §0.3, §5.7 ("derivations" below).

Both are non-convex: they run ``num_restarts`` Riemannian first-order solves from uniform random
starts, ``jax.vmap`` ped over the restart keys in one compiled program, and report the best
configuration with the value of every restart (the spread says how rugged the landscape is).

**Fixed classifiers** (``K x d``, unit rows; :func:`fixed_classifier` dispatches by name):

* ``"etf"``: the simplex ETF, :func:`ufm.theory.simplex_etf` (needs ``d >= K - 1``);
* ``"d_simplex"``: the regular simplex in the coordinates of Pernici et al.'s fixed classifier
  (:func:`d_simplex`; "Regular Polytope Networks", arXiv 2103.15632; used again for stationary
  representations, Biondi, Pernici et al. 2024, arXiv 2405.02581);
* ``"orthoplex"``: the vertices :math:`\pm e_i` of the cross-polytope (:func:`orthoplex`, the
  ``d``-Orthoplex classifier of the same paper);
* ``"ebv"``: equiangular basis vectors, unit vectors with :math:`|\cos| \le \alpha` for every pair
  (:func:`equiangular_basis_vectors`; Shen, Sun & Wei, CVPR 2023, arXiv 2303.11637);
* ``"sparse_etf"``: FedLoGe's static sparse ETF classifier SSE-C (:func:`sparse_etf`; Xiao et al.,
  ICLR 2024, arXiv 2401.08977).

:func:`classifier_alignment` measures how learned features align with a (fixed) classifier.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from ufm import metrics as _metrics
from ufm import theory
from ufm.spherical import unit_columns
from ufm.validate import check_int, check_real

__all__ = [
    "EBVResult",
    "FIXED_CLASSIFIERS",
    "OptimisedGeometry",
    "SparseETFResult",
    "angular_gaps",
    "classifier_alignment",
    "d_simplex",
    "equiangular_basis_vectors",
    "fixed_classifier",
    "log_energy",
    "minimal_energy",
    "one_vs_rest_distances",
    "orthoplex",
    "pair_distances",
    "riesz_energy",
    "softmax_code",
    "sparse_etf",
]

FIXED_CLASSIFIERS = ("etf", "d_simplex", "orthoplex", "ebv", "sparse_etf")


# ------------------------------------------------------------------------------------ energies


def pair_distances(X_dxK: Float[Array, "d K"]) -> Float[Array, "P"]:
  r"""The ``K(K-1)/2`` distances :math:`\|x_i - x_j\|_2`, ``i < j`` (row-major order of ``triu_indices``)."""
  K = X_dxK.shape[1]
  i, j = jnp.triu_indices(K, k=1)
  D = X_dxK[:, i] - X_dxK[:, j]
  return jnp.sqrt(jnp.sum(D**2, axis=0))


def riesz_energy(X_dxK: Float[Array, "d K"], s) -> Float[Array, ""]:
  r"""Riesz ``s``-energy :math:`E_s = \sum_{i<j}\|x_i - x_j\|^{-s}` for ``s > 0``, and the logarithmic
  energy :math:`E_0 = \sum_{i<j}\log(1/\|x_i - x_j\|)` for ``s = 0`` (the ``s -> 0`` limit of
  :math:`(E_s - \binom K2)/s`). Borodachov, Hardin & Saff, "Discrete Energy on Rectifiable Sets" (2019), §2."""
  r = pair_distances(X_dxK)
  return jnp.where(s == 0, -jnp.sum(jnp.log(r)), jnp.sum(r ** (-jnp.where(s == 0, 1.0, s))))


def log_energy(X_dxK: Float[Array, "d K"]) -> Float[Array, ""]:
  r""":math:`\sum_{i<j}\log(1/\|x_i - x_j\|)`; divided by ``K(K-1)/2`` it is GNC2 (:func:`ufm.metrics.gnc2`)
  when the columns are unit vectors with zero mean."""
  return -jnp.sum(jnp.log(pair_distances(X_dxK)))


class OptimisedGeometry(NamedTuple):
  """A multi-restart optimisation on the sphere.

  Attributes:
    X: the best configuration, ``d x K`` with unit columns.
    value: the best objective value (energy for :func:`minimal_energy`, :math:`\\rho` for :func:`softmax_code`).
    values: the value reached by every restart (``num_restarts``), in the order of the restart keys.
    spread: ``max(values) - min(values)``.
  """
  X: jax.Array
  value: jax.Array
  values: jax.Array
  spread: jax.Array


def _check_shape(K, d, lo_K=2):
  K = check_int("K", K, lo=lo_K)
  d = check_int("d", d, lo=2)
  return K, d


def _uniform_sphere(key, d, K, dtype):
  return unit_columns(jax.random.normal(key, (d, K), dtype))


def _tangent(X, G):
  """Projection of the Euclidean gradient ``G`` onto the tangent spaces of the columns of ``X``."""
  return G - X * jnp.sum(X * G, axis=0, keepdims=True)


@functools.partial(jax.jit, static_argnames=("K", "d", "num_steps"))
def _energy_solve(keys, s, lr, *, K, d, num_steps):
  dtype = lr.dtype
  energy = lambda X: riesz_energy(X, s)
  # Adam on the tangent gradient, cosine-decayed step, retraction by normalisation.
  opt = optax.adam(optax.cosine_decay_schedule(1.0, num_steps, alpha=1e-4))

  def one(key):
    X0 = _uniform_sphere(key, d, K, dtype)

    def step(carry, _):
      X, st = carry
      g = _tangent(X, jax.grad(energy)(X))
      u, st = opt.update(g, st, X)
      return (unit_columns(X + lr * u), st), None

    (X, _), _ = jax.lax.scan(step, (X0, opt.init(X0)), None, length=num_steps)
    return X, energy(X)

  return jax.vmap(one)(keys)


def minimal_energy(key: jax.Array, K: int, d: int, *, s: float = 0.0, num_restarts: int = 8,
                   num_steps: int = 3000, lr: float = 0.05, dtype=None) -> OptimisedGeometry:
  r"""Minimal Riesz ``s``-energy (``s > 0``) or logarithmic energy (``s = 0``) configuration of ``K``
  points on :math:`S^{d-1}` (:func:`riesz_energy`; Thomson's problem is ``s = 1``, ``d = 3``).

  Riemannian Adam (tangent gradient, retraction by normalisation, cosine-decayed step ``lr``) from
  ``num_restarts`` uniform random starts vmapped over ``jax.random.split(key, num_restarts)``.
  Known minimisers used as checks: the regular ``K``-gon (``d = 2``, any ``s``), the simplex ETF
  (``K <= d + 1``) and the octahedron (``K = 6``, ``d = 3``); see :mod:`ufm.theory` (constructed
  configurations, derivations §5.7).

  Returns:
    :class:`OptimisedGeometry` (``value`` is the smallest energy).
  """
  K, d = _check_shape(K, d)
  num_restarts = check_int("num_restarts", num_restarts, lo=1)
  num_steps = check_int("num_steps", num_steps, lo=1)
  s = float(check_real("s", s, lo=0.0))
  lr = float(check_real("lr", lr, lo=0.0, lo_open=True))
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  X, E = _energy_solve(jax.random.split(key, num_restarts), jnp.asarray(s, dtype), jnp.asarray(lr, dtype),
                       K=K, d=d, num_steps=num_steps)
  best = jnp.argmin(E)
  return OptimisedGeometry(X=X[best], value=E[best], values=E, spread=jnp.max(E) - jnp.min(E))


# ----------------------------------------------------------------------------- softmax codes


def _project_simplex(v: jax.Array, mask: jax.Array) -> jax.Array:
  """Euclidean projection of ``v`` onto the probability simplex on the coordinates where ``mask`` is true
  (the others are 0), by sorting (Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008, Fig. 1)."""
  n = jnp.sum(mask)
  big = jnp.where(mask, v, -jnp.inf)
  u = -jnp.sort(-big)
  css = jnp.cumsum(jnp.where(jnp.isfinite(u), u, 0.0))
  idx = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)
  cond = (u - (css - 1.0) / idx > 0) & (idx <= n)
  r = jnp.max(jnp.where(cond, idx, 1.0))
  theta = (jnp.sum(jnp.where(idx <= r, jnp.where(jnp.isfinite(u), u, 0.0), 0.0)) - 1.0) / r
  return jnp.where(mask, jnp.maximum(v - theta, 0.0), 0.0)


def _hull_weights(X, A, num_iters):
  """FISTA (Beck & Teboulle 2009) on :math:`\\min_{a \\in \\Delta}\\|x_k - X a\\|^2` with ``a_k = 0``, for every
  ``k`` at once (``A``: ``K x K`` warm starts, row ``k`` for class ``k``)."""
  K = X.shape[1]
  G = X.T @ X
  L = 2.0 * jnp.linalg.norm(G, ord=2) + 1e-30
  masks = ~jnp.eye(K, dtype=bool)

  def solve(k, a0):
    m = masks[k]
    proj = lambda v: _project_simplex(v, m)

    def body(_, c):
      a, y, t = c
      grad = 2.0 * (G @ y - G[:, k])
      a_new = proj(y - grad / L)
      t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
      return a_new, a_new + ((t - 1.0) / t_new) * (a_new - a), t_new

    a0 = proj(a0)
    a, _, _ = jax.lax.fori_loop(0, num_iters, body, (a0, a0, jnp.ones((), X.dtype)))
    return a

  return jax.vmap(solve)(jnp.arange(K), A)


def _distances_given(X, A):
  R = X - X @ A.T  # column k: x_k - X a_k
  return jnp.sqrt(jnp.maximum(jnp.sum(R**2, axis=0), 0.0))


def one_vs_rest_distances(X_dxK: Float[Array, "d K"], *, num_iters: int = 3000) -> Float[Array, "K"]:
  r"""The one-vs-rest distances :math:`\rho_k = \operatorname{dist}(x_k, \operatorname{conv}\{x_j : j\ne k\})`
  (Jiang et al. 2024, arXiv 2310.05351; their minimum over ``k`` is the quantity a softmax code maximises).

  Each is the value of the quadratic programme :math:`\min_{a\in\Delta,\ a_k = 0}\|x_k - Xa\|`, solved
  by FISTA with projections onto the simplex (``num_iters`` iterations, from uniform weights); the
  returned value is an upper bound that converges as :math:`O(1/t^2)` in the squared distance.
  Closed forms: regular ``K``-gon :math:`1 - \cos(2\pi/K)`, simplex ETF :math:`K/(K-1)`, orthoplex 1
  (:mod:`ufm.theory`, derivations §5.7). Cost :math:`O(\text{num\_iters}\cdot K^2 d)`: for small ``K``.
  """
  num_iters = check_int("num_iters", num_iters, lo=1)
  return _one_vs_rest(X_dxK, num_iters=num_iters)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def _one_vs_rest(X, *, num_iters):
  K = X.shape[1]
  A0 = (1.0 - jnp.eye(K, dtype=X.dtype)) / (K - 1)
  return _distances_given(X, _hull_weights(X, A0, num_iters))


def _polish(X, A, eta0, eps0, *, polish_steps, inner_iters):
  """Steepest ascent for the max-min (Demyanov & Malozemov 1974, "Introduction to Minimax", Ch. III; Kiwiel 1985):
  the ascent direction is the min-norm point of the convex hull of the tangent gradients of the active
  :math:`\rho_k` (those within ``eps`` of the minimum; ``eps`` and the step shrink geometrically). The min-norm point
  is a simplex-constrained QP, solved by projected gradient. Returns the last iterate and its hull weights."""
  K = X.shape[1]
  dtype = X.dtype

  def step(carry, t):
    X, A = carry
    A = _hull_weights(X, A, inner_iters)
    rho_fn = lambda Y: _distances_given(Y, jax.lax.stop_gradient(A))
    rho = rho_fn(X)
    J = jax.vmap(lambda G: _tangent(X, G))(jax.jacrev(rho_fn)(X))  # K x d x K: the gradient of each rho_k
    frac = t / polish_steps
    active = rho <= jnp.min(rho) + eps0 * 1e-4**frac
    G = jnp.einsum("kij,lij->kl", J, J)
    L = jnp.linalg.norm(G, ord=2) + 1e-30
    lam = jax.lax.fori_loop(0, 200, lambda _, v: _project_simplex(v - G @ v / L, active),
                            _project_simplex(jnp.ones(K, dtype), active))
    direction = jnp.einsum("k,kij->ij", lam, J)
    X = unit_columns(X + eta0 * 1e-3**frac * direction / (jnp.linalg.norm(direction) + 1e-30))
    return (X, A), None

  (X, A), _ = jax.lax.scan(step, (X, A), jnp.arange(polish_steps, dtype=dtype))
  return X, A


@functools.partial(jax.jit, static_argnames=("K", "d", "num_steps", "inner_iters", "final_iters", "polish_steps"))
def _softmax_code_solve(keys, lr, beta0, beta1, *, K, d, num_steps, inner_iters, final_iters, polish_steps):
  dtype = lr.dtype
  opt = optax.adam(optax.cosine_decay_schedule(1.0, num_steps, alpha=1e-3))

  def one(key):
    X0 = _uniform_sphere(key, d, K, dtype)
    A0 = (1.0 - jnp.eye(K, dtype=dtype)) / (K - 1)

    def step(carry, t):
      X, A, st = carry
      A = _hull_weights(X, A, inner_iters)  # warm-started inner solves
      beta = beta0 * (beta1 / beta0) ** (t / num_steps)
      # Danskin: the gradient of rho_k(X) is that of ||x_k - X a_k|| at the optimal weights a_k (held fixed).
      softmin = lambda Y: -jax.nn.logsumexp(-beta * _distances_given(Y, jax.lax.stop_gradient(A))) / beta
      g = _tangent(X, jax.grad(softmin)(X))
      u, st = opt.update(-g, st, X)
      return (unit_columns(X + lr * u), A, st), None

    (X, A, _), _ = jax.lax.scan(step, (X0, A0, opt.init(X0)), jnp.arange(num_steps, dtype=dtype))
    rho = jnp.min(_distances_given(X, _hull_weights(X, A, final_iters)))
    if polish_steps:
      Xp, Ap = _polish(X, A, lr, 0.05, polish_steps=polish_steps, inner_iters=max(inner_iters, 50))
      rho_p = jnp.min(_distances_given(Xp, _hull_weights(Xp, Ap, final_iters)))
      X, rho = jnp.where(rho_p > rho, Xp, X), jnp.maximum(rho, rho_p)
    return X, rho

  return jax.vmap(one)(keys)


def softmax_code(key: jax.Array, K: int, d: int, *, num_restarts: int = 8, num_steps: int = 2000,
                 lr: float = 0.02, beta: tuple[float, float] = (20.0, 2000.0), inner_iters: int = 20,
                 final_iters: int = 3000, polish_steps: int = 2000, dtype=None) -> OptimisedGeometry:
  r"""A softmax code: ``K`` unit vectors in :math:`\mathbb R^d` maximising the minimal one-vs-rest distance

  .. math:: \max_{\|x_k\| = 1}\ \min_k\ \operatorname{dist}\big(x_k, \operatorname{conv}\{x_j : j \ne k\}\big)

  (Jiang et al. 2024, arXiv 2310.05351, Def. 3.2 as derivations §5.7 reads it; the limit of the spherical
  CE-UFM classifier as :math:`\tau \to 0`). Solved by Riemannian Adam on the soft minimum
  :math:`-\beta^{-1}\log\sum_k e^{-\beta\rho_k}` with :math:`\beta` annealed geometrically over
  ``beta``; :math:`\nabla\rho_k` by Danskin's theorem at the hull weights, which warm-started FISTA
  (``inner_iters`` per step; :func:`one_vs_rest_distances`) keeps up to date. The soft minimum is biased at
  non-smooth maxima (the octahedron, the icosahedron), so ``polish_steps`` steps of steepest ascent for the
  max-min follow (min-norm point of the convex hull of the active gradients; the better of the two iterates is
  kept). ``num_restarts`` uniform random starts are vmapped; ``value`` is the best :math:`\min_k\rho_k`,
  evaluated with ``final_iters`` FISTA iterations.
  """
  K, d = _check_shape(K, d, lo_K=3)
  num_restarts = check_int("num_restarts", num_restarts, lo=1)
  num_steps = check_int("num_steps", num_steps, lo=1)
  inner_iters = check_int("inner_iters", inner_iters, lo=1)
  final_iters = check_int("final_iters", final_iters, lo=1)
  polish_steps = check_int("polish_steps", polish_steps, lo=0)
  lr = float(check_real("lr", lr, lo=0.0, lo_open=True))
  b0, b1 = (float(check_real("beta", b, lo=0.0, lo_open=True)) for b in beta)
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  X, rho = _softmax_code_solve(jax.random.split(key, num_restarts), jnp.asarray(lr, dtype), jnp.asarray(b0, dtype),
                               jnp.asarray(b1, dtype), K=K, d=d, num_steps=num_steps, inner_iters=inner_iters,
                               final_iters=final_iters, polish_steps=polish_steps)
  best = jnp.argmax(rho)
  return OptimisedGeometry(X=X[best], value=rho[best], values=rho, spread=jnp.max(rho) - jnp.min(rho))


def angular_gaps(X_2xK: Float[Array, "2 K"]) -> Float[Array, "K"]:
  r"""For ``d = 2``: the gaps between consecutive angles :math:`\mathrm{atan2}(x_2, x_1)` of the columns,
  sorted ascending (all :math:`2\pi/K` exactly for a regular ``K``-gon)."""
  ang = jnp.sort(jnp.mod(jnp.arctan2(X_2xK[1], X_2xK[0]), 2 * jnp.pi))
  return jnp.sort(jnp.diff(jnp.concatenate([ang, ang[:1] + 2 * jnp.pi])))


# ----------------------------------------------------------------------------- fixed classifiers


def d_simplex(K: int, d: int | None = None, dtype=None) -> jax.Array:
  r"""The ``d``-Simplex fixed classifier of Pernici, Bruni, Baecchi & Del Bimbo ("Regular Polytope Networks",
  IEEE TNNLS 2022, arXiv 2103.15632, §3.1), ``K x d`` with unit rows.

  The vertices of the regular simplex in :math:`\mathbb R^{K-1}`: :math:`e_1, \dots, e_{K-1}` and
  :math:`\alpha\mathbf 1` with :math:`\alpha = (1 - \sqrt K)/(K-1)`, shifted to zero centroid and scaled to
  unit norm (the coordinates the authors' code takes from Burkardt's ``simplex_coordinates2``); padded
  with zero coordinates when ``d > K - 1``. Gram: the simplex ETF's, :math:`\cos = -1/(K-1)`; every
  vertex but the last is :math:`c\,(e_k - g)` for the centroid :math:`g` of the unshifted vertices.
  """
  K = check_int("K", K, lo=2)
  d = K - 1 if d is None else check_int("d", d, lo=K - 1)
  m = K - 1
  V = np.zeros((K, m))
  V[:m] = np.eye(m)
  V[m] = (1.0 - math.sqrt(K)) / m
  V = V - V.mean(axis=0, keepdims=True)
  V = V / np.linalg.norm(V[0])
  out = np.zeros((K, d))
  out[:, :m] = V
  return jnp.asarray(out, dtype or jnp.result_type(float))


def orthoplex(K: int, d: int | None = None, dtype=None) -> jax.Array:
  r"""The ``d``-Orthoplex fixed classifier (Pernici et al., arXiv 2103.15632, §3.3): rows
  :math:`e_1, -e_1, e_2, -e_2, \dots` (the first ``K`` of them), ``K x d`` with ``d >= ceil(K/2)``
  (default). For ``K = 2d`` all vertices of the cross-polytope."""
  K = check_int("K", K, lo=2)
  lo = (K + 1) // 2
  d = lo if d is None else check_int("d", d, lo=lo)
  out = np.zeros((K, d))
  for k in range(K):
    out[k, k // 2] = 1.0 if k % 2 == 0 else -1.0
  return jnp.asarray(out, dtype or jnp.result_type(float))


class EBVResult(NamedTuple):
  """Equiangular basis vectors: ``W`` (``K x d``, unit rows), the largest :math:`|\\cos|` over pairs
  reached, whether it is ``<= alpha``, and the number of steps taken."""
  W: jax.Array
  max_abs_cos: jax.Array
  reached: jax.Array
  num_steps: jax.Array


@functools.partial(jax.jit, static_argnames=("K", "d", "max_steps"))
def _ebv_solve(key, alpha, lr, *, K, d, max_steps):
  dtype = alpha.dtype
  off = ~jnp.eye(K, dtype=bool)

  def max_abs_cos(W):
    return jnp.max(jnp.where(off, jnp.abs(W @ W.T), 0.0))

  def loss(W):
    Wn = W / jnp.linalg.norm(W, axis=1, keepdims=True)
    return jnp.sum(jnp.where(off, jax.nn.relu(jnp.abs(Wn @ Wn.T) - alpha), 0.0))

  def cond(c):
    W, t = c
    return (t < max_steps) & (max_abs_cos(W) > alpha)

  def body(c):
    W, t = c
    W = W - lr * jax.grad(loss)(W)
    return W / jnp.linalg.norm(W, axis=1, keepdims=True), t + 1

  W0 = jax.random.normal(key, (K, d), dtype)
  W0 = W0 / jnp.linalg.norm(W0, axis=1, keepdims=True)
  W, t = jax.lax.while_loop(cond, body, (W0, jnp.zeros((), jnp.int32)))
  m = max_abs_cos(W)
  return EBVResult(W=W, max_abs_cos=m, reached=m <= alpha, num_steps=t)


def equiangular_basis_vectors(key: jax.Array, K: int, d: int, *, alpha: float = 0.1, lr: float = 0.01,
                              max_steps: int = 20_000, dtype=None) -> EBVResult:
  r"""Equiangular basis vectors (Shen, Sun & Wei, "Equiangular Basis Vectors", CVPR 2023, arXiv 2303.11637,
  §3.2): ``K`` unit vectors in :math:`\mathbb R^d`, nearly orthogonal, with

  .. math:: |\cos(w_i, w_j)| \le \alpha \quad \forall i \ne j,

  found as in the authors' generator (``Generate_EBV.py``): projected gradient descent on
  :math:`\sum_{i\ne j}\max(|\langle w_i, w_j\rangle| - \alpha, 0)` with rows renormalised after each step,
  stopped as soon as every pair satisfies the bound (or after ``max_steps``; then ``reached`` is false).
  Any ``K >= 2``; the bound is attainable only above the Welch bound
  :math:`\sqrt{(K-d)/(d(K-1))}` when ``K > d`` (Welch 1974), which is checked here.
  """
  K, d = _check_shape(K, d)
  alpha = float(check_real("alpha", alpha, lo=0.0, lo_open=True, hi=1.0, hi_open=True))
  if K > d:
    welch = math.sqrt((K - d) / (d * (K - 1)))
    if alpha < welch:
      raise ValueError(f"alpha = {alpha!r} is below the Welch bound sqrt((K-d)/(d(K-1))) = {welch:.6g} for K = {K}, "
                       f"d = {d}; allowed range: {welch:.6g} <= alpha < 1")
  lr = float(check_real("lr", lr, lo=0.0, lo_open=True))
  max_steps = check_int("max_steps", max_steps, lo=1)
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  return _ebv_solve(key, jnp.asarray(alpha, dtype), jnp.asarray(lr, dtype), K=K, d=d, max_steps=max_steps)


class SparseETFResult(NamedTuple):
  """FedLoGe's SSE-C: ``W`` (``K x d``, unit rows, zero off ``mask``), the sparsity ``mask`` (``K x d``,
  true where an entry may be non-zero) and the largest pairwise cosine reached."""
  W: jax.Array
  mask: jax.Array
  max_cos: jax.Array


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _sparse_etf_solve(W0, mask, lr, beta, *, num_steps):
  K = W0.shape[0]
  off = ~jnp.eye(K, dtype=bool)
  opt = optax.adam(optax.cosine_decay_schedule(1.0, num_steps, alpha=1e-3))

  def normed(W):
    return W / jnp.linalg.norm(W, axis=1, keepdims=True)

  def loss(W):  # soft maximum over pairs of the cosine (FedLoGe maximises the angle to the nearest neighbour)
    C = normed(W) @ normed(W).T
    return jax.nn.logsumexp(jnp.where(off, beta * C, -jnp.inf)) / beta

  def step(carry, _):
    W, st = carry
    u, st = opt.update(jax.grad(loss)(W) * mask, st, W)
    return (normed((W + lr * u) * mask), st), None

  (W, _), _ = jax.lax.scan(step, (normed(W0 * mask), opt.init(W0)), None, length=num_steps)
  C = W @ W.T
  return W, jnp.max(jnp.where(off, C, -jnp.inf))


def sparse_etf(key: jax.Array, K: int, d: int, *, sparsity: float = 0.6, num_steps: int = 2000, lr: float = 0.01,
               beta: float = 50.0, dtype=None) -> SparseETFResult:
  r"""The static sparse ETF classifier SSE-C of FedLoGe (Xiao, Chen, Liu, Feng, Wu, Liu, Zhou, Yang & Liu,
  "FedLoGe: Joint Local and Generic Federated Learning under Long-tailed Data", ICLR 2024,
  arXiv 2401.08977, §4.1; the authors' ``gen_sparse_ETF``).

  Start from a simplex ETF with a random orthonormal embedding (:func:`ufm.theory.simplex_etf`, needs
  ``d >= K - 1``), set exactly :math:`\lfloor \text{sparsity}\cdot Kd\rfloor` entries chosen uniformly at
  random to zero, then optimise the remaining entries (gradients masked) to spread the classifiers apart:
  Adam on the soft maximum :math:`\beta^{-1}\log\sum_{i\ne j} e^{\beta\cos(w_i, w_j)}`, rows renormalised
  to unit norm after every step (the paper penalises the norms towards a constant and maximises the
  mean angle to the nearest neighbour; the unit-norm projection makes the equal norms exact).
  Every row keeps at least two non-zero entries (a draw that leaves fewer is refused).
  """
  K, d = _check_shape(K, d)
  if d < K - 1:
    raise ValueError(f"d = {d} is out of range for a sparse simplex ETF of K = {K} classes; "
                     f"allowed: d >= K-1 = {K - 1}")
  sparsity = float(check_real("sparsity", sparsity, lo=0.0, hi=1.0, hi_open=True))
  num_steps = check_int("num_steps", num_steps, lo=1)
  lr = float(check_real("lr", lr, lo=0.0, lo_open=True))
  beta = float(check_real("beta", beta, lo=0.0, lo_open=True))
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  k_etf, k_mask = jax.random.split(key)
  W0 = theory.simplex_etf(K, d, key=k_etf, dtype=dtype).T
  num_zero = int(math.floor(sparsity * K * d))
  zero_idx = np.asarray(jax.random.permutation(k_mask, K * d)[:num_zero])
  mask = np.ones(K * d, bool)
  mask[zero_idx] = False
  mask = mask.reshape(K, d)
  if np.any(mask.sum(axis=1) < 2):
    raise ValueError(f"sparsity = {sparsity!r} leaves a row of W with fewer than 2 non-zero entries for this key "
                     f"(K = {K}, d = {d}); allowed: a smaller sparsity or another key")
  W, max_cos = _sparse_etf_solve(W0, jnp.asarray(mask), jnp.asarray(lr, dtype), jnp.asarray(beta, dtype),
                                 num_steps=num_steps)
  return SparseETFResult(W=W, mask=jnp.asarray(mask), max_cos=max_cos)


def fixed_classifier(name: str, K: int, d: int, *, key: jax.Array | None = None, dtype=None, **kwargs) -> jax.Array:
  r"""A fixed classifier ``K x d`` with unit rows, by name (:data:`FIXED_CLASSIFIERS`):
  ``"etf"`` (:func:`ufm.theory.simplex_etf`, random orthonormal embedding when ``key`` is given),
  ``"d_simplex"`` (:func:`d_simplex`), ``"orthoplex"`` (:func:`orthoplex`),
  ``"ebv"`` (:func:`equiangular_basis_vectors`; ``key`` required, ``kwargs`` passed on) and
  ``"sparse_etf"`` (:func:`sparse_etf`; ``key`` required). Use it as ``W_fixed`` of
  :func:`ufm.spherical.make_spherical_problem`.
  """
  if name not in FIXED_CLASSIFIERS:
    raise ValueError(f"unknown fixed classifier {name!r}; allowed: {', '.join(FIXED_CLASSIFIERS)}")
  if name in ("ebv", "sparse_etf") and key is None:
    raise ValueError(f"fixed classifier {name!r} is random: pass key=jax.random.key(seed)")
  if name == "etf":
    return theory.simplex_etf(K, d, key=key, dtype=dtype).T
  if name == "d_simplex":
    return d_simplex(K, d, dtype=dtype)
  if name == "orthoplex":
    return orthoplex(K, d, dtype=dtype)
  if name == "ebv":
    return equiangular_basis_vectors(key, K, d, dtype=dtype, **kwargs).W
  return sparse_etf(key, K, d, dtype=dtype, **kwargs).W


# ----------------------------------------------------------------------------- alignment metrics


def classifier_alignment(W: Float[Array, "K d"], H: Float[Array, "d N"], labels: Int[Array, "N"],
                         K: int) -> dict[str, jax.Array]:
  r"""How the features align with a classifier ``W`` (learned or fixed), with :math:`\bar h_k` the
  *uncentred* class means (a fixed classifier has no bias to absorb a global mean):

  * ``cos_mean`` / ``cos_min``: mean and minimum over classes of :math:`\cos(w_k, \bar h_k)` (1 at GNC3);
  * ``sample_cos_min``: :math:`\min_i \cos(w_{y_i}, h_i)` (1 when every feature sits on its classifier);
  * ``accuracy``: the fraction of samples with :math:`\arg\max_k w_k^\top h_i = y_i`;
  * ``margin``: :math:`\min_i \big(\hat w_{y_i}^\top\hat h_i - \max_{k\ne y_i}\hat w_k^\top\hat h_i\big)` on
    unit vectors (positive iff every sample is classified correctly);
  * ``nc1_ratio``: :math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B` (:func:`ufm.metrics.nc1_ratio`).

  Memory :math:`O(KN)` (the logits); for very large ``K`` use :mod:`ufm.tiled`.
  """
  Wn = W / jnp.linalg.norm(W, axis=1, keepdims=True)
  Hn = unit_columns(H)
  M_dxK = _metrics.class_means(H, labels, K)[0]
  cos_k = jnp.sum(Wn.T * unit_columns(M_dxK), axis=0)
  S_KxN = Wn @ Hn
  own = jnp.take_along_axis(S_KxN, labels[None, :], axis=0)[0]
  other = jnp.max(jnp.where(jnp.arange(K)[:, None] == labels[None, :], -jnp.inf, S_KxN), axis=0)
  return {"cos_mean": jnp.mean(cos_k), "cos_min": jnp.min(cos_k), "sample_cos_min": jnp.min(own),
          "accuracy": jnp.mean((jnp.argmax(W @ H, axis=0) == labels).astype(H.dtype)),
          "margin": jnp.min(own - other), "nc1_ratio": _metrics.nc1_ratio(H, labels, K)}
