r"""Frames: the simplex ETF, orthogonal frames, random orthonormal embeddings, regular polygons, cross-polytopes.

Constructions only (no objective): the configurations the closed forms of :mod:`ufm.theory` predict. Sections
cited as "derivations §x" are in ``ufm/theory/derivations.md``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory.prediction import NoClosedFormError
from ufm.validate import check_int

__all__ = [
    "cross_polytope",
    "etf_gram",
    "etf_target",
    "orthogonal_frame",
    "random_orthonormal",
    "regular_polygon",
    "simplex_etf",
]


def random_orthonormal(key: jax.Array, d: int, r: int, dtype=None) -> jax.Array:
  r"""A Haar-random ``d x r`` matrix :math:`Q` with orthonormal columns (:math:`Q^\top Q = I_r`, ``r <= d``): the
  QR factor of a Gaussian matrix with the signs of :math:`\mathrm{diag}(R)` fixed positive (Mezzadri 2007,
  arXiv math-ph/0609050)."""
  if r > d:
    raise ValueError(f"r = {r} is out of range; allowed range: r <= d = {d}")
  A = jax.random.normal(key, (d, r), dtype or jnp.result_type(float))
  Q, R = jnp.linalg.qr(A)
  return Q * jnp.sign(jnp.diagonal(R))[None, :]


def _embedding(key, d: int, r: int, dtype) -> jax.Array:
  """The first ``r`` coordinate axes of R^d when ``key`` is None, a Haar-random orthonormal ``d x r`` otherwise."""
  if key is None:
    return jnp.eye(d, r, dtype=dtype)
  return random_orthonormal(key, d, r, dtype)


def etf_gram(K: int, dtype=None) -> jax.Array:
  r"""Gram matrix of the unit-norm simplex ETF: :math:`\frac{K}{K-1}(I_K - \frac1K \mathbf 1\mathbf 1^\top)`.

  Unit diagonal, off-diagonal :math:`-1/(K-1)` (Papyan, Han, Donoho 2020, arXiv 2008.08186, Def. of NC2).
  """
  check_int("K", K, lo=2)
  dtype = dtype or jnp.result_type(float)
  return (K / (K - 1)) * (jnp.eye(K, dtype=dtype) - jnp.full((K, K), 1.0 / K, dtype))


def etf_target(K: int, dtype=None) -> jax.Array:
  r"""Frobenius-normalised ETF Gram :math:`E = (I_K - \frac1K\mathbf 1\mathbf 1^\top)/\sqrt{K-1}`
  (derivations §0.2)."""
  return etf_gram(K, dtype) * ((K - 1) / K) / math.sqrt(K - 1)


def simplex_etf(K: int, d: int | None = None, *, key: jax.Array | None = None, dtype=None) -> jax.Array:
  r"""A unit-norm simplex ETF as the columns of a ``d x K`` matrix.

  .. math:: M = \sqrt{\tfrac{K}{K-1}}\; P\, B^\top, \qquad
     M^\top M = \tfrac{K}{K-1}\big(I_K - \tfrac1K \mathbf 1\mathbf 1^\top\big),

  where :math:`B` (``K x (K-1)``) is the Helmert orthonormal basis of
  :math:`\mathbf 1^\perp` and :math:`P` (``d x (K-1)``) has orthonormal columns: the
  first ``K-1`` coordinate axes when ``key`` is None, a Haar-random embedding otherwise.
  Needs ``d >= K - 1`` (Papyan, Han, Donoho 2020, arXiv 2008.08186, Def. 1).
  """
  check_int("K", K, lo=2)
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
  arXiv 2202.08087; Dang et al. 2023, arXiv 2301.00437; theorem numbers unverified, derivations §5.4, §1.2).
  """
  check_int("K", K, lo=1)
  d = K if d is None else d
  if d < K:
    raise NoClosedFormError(f"d = {d} is out of range for an orthogonal frame of K = {K} vectors; "
                            f"allowed range: d >= K = {K}")
  return _embedding(key, d, K, dtype or jnp.result_type(float))


def regular_polygon(K: int, dtype=None) -> jax.Array:
  r"""The regular ``K``-gon on the unit circle as the columns of a ``2 x K`` matrix,
  :math:`x_k = (\cos(2\pi k/K), \sin(2\pi k/K))`: the softmax code and every minimal Riesz/log-energy
  configuration of ``K`` points for ``d = 2`` (Jiang et al. 2024, arXiv 2310.05351; derivations §5.7)."""
  check_int("K", K, lo=3)
  a = 2 * np.pi * np.arange(K) / K
  return jnp.asarray(np.stack([np.cos(a), np.sin(a)]), dtype or jnp.result_type(float))


def cross_polytope(d: int, dtype=None) -> jax.Array:
  r"""The ``2d`` vertices :math:`\pm e_i` of the cross-polytope (orthoplex), columns of a ``d x 2d`` matrix in the
  order :math:`e_1, -e_1, e_2, -e_2, \dots`."""
  check_int("d", d, lo=1)
  X = np.zeros((d, 2 * d))
  for i in range(d):
    X[i, 2 * i], X[i, 2 * i + 1] = 1.0, -1.0
  return jnp.asarray(X, dtype or jnp.result_type(float))
