r"""Explicit low-rank parameters of the deep UFM with ReLU layers that lie below deep neural collapse for ``L >= 4``.

The configuration of :func:`ufm.theory.relu_lowrank` (derivations §15), built as :class:`ufm.relu_deep.ReLUParams`
of a balanced :class:`ufm.relu_deep.ReLUDeepProblem`, so that its objective can be evaluated on the full DUFM
objective (``problem.value``) and compared with the closed form and with the best DNC value
(:func:`ufm.theory.relu_dnc`). In a block of :math:`K_r = r(r-1)/2` classes, the edges :math:`\{i, j\}` of the
complete graph on ``r`` vertices, the hidden class means are :math:`e_i + e_j` (rank ``r < K_r`` for ``r >= 4``,
non-negative, so every ReLU but the last acts as the identity), and the last ReLU turns the rank-deficient
:math:`P^\top P - J` (the triangular graph :math:`T(r)` and its complement, strongly regular) into the identity.
This is the kind of low-rank solution Súkeník, Mondelli, Lampert (NeurIPS 2024, arXiv 2405.14468) oppose to DNC;
the construction here is derived in this package.

The norms of the factors are computed here from the explicit matrices (SVDs), not taken from the closed form: only
the output scales ``z`` come from :func:`ufm.theory.relu_lowrank`.
"""

import jax.numpy as jnp
import numpy as np

from ufm import theory
from ufm.relu_deep import ReLUDeepProblem, ReLUParams

__all__ = ["lowrank_factors", "lowrank_params", "triangular_incidence"]


def triangular_incidence(r: int) -> np.ndarray:
  r"""The ``r x r(r-1)/2`` incidence matrix :math:`P` of the complete graph on ``r`` vertices: column :math:`\{i, j\}`
  (``i < j``, lexicographic) is :math:`e_i + e_j`. :math:`P^\top P = 2I + A_{T(r)}`, ``A`` the adjacency of the
  triangular graph; rank ``r`` for ``r >= 3``."""
  pairs = [(i, j) for i in range(r) for j in range(i + 1, r)]
  P = np.zeros((r, len(pairs)))
  for k, (i, j) in enumerate(pairs):
    P[i, k] = P[j, k] = 1.0
  return P


def lowrank_factors(r: int, L: int) -> list:
  r"""The ``L + 1`` unit factors of one :math:`T(r)` block, ``[F_0, ..., F_L]`` (``F_0`` the block's class means of
  :math:`H_1`, ``F_l`` its part of :math:`W_l`), whose ReLU network :math:`F_L\sigma(F_{L-1}\cdots\sigma(F_1F_0))`
  is :math:`I_{K_r}`. ``L >= 3``: :math:`P = USV^\top`, :math:`F_0 = S^{1/2}V^\top`, :math:`F_1 = US^{1/2}` (so
  :math:`F_1F_0 = P \ge 0`), :math:`F_l = I_r` (``2 <= l <= L-2``), :math:`F_{L-1} = P^\top - \tfrac12J` (so
  :math:`F_{L-1}P = P^\top P - J`, whose ReLU is :math:`I`), :math:`F_L = I`. ``L = 2``: the balanced SVD factors of
  :math:`P^\top P - J` (``H_1`` is free, so no sign constraint), then :math:`I`."""
  P = triangular_incidence(r)
  Kr = P.shape[1]
  if L == 2:
    U, s, Vt = np.linalg.svd(P.T @ P - 1.0)
    k = int(np.sum(s > 1e-9 * s[0]))
    return [np.sqrt(s[:k])[:, None] * Vt[:k], U[:, :k] * np.sqrt(s[:k]), np.eye(Kr)]
  U, s, Vt = np.linalg.svd(P, full_matrices=False)
  return [np.sqrt(s)[:, None] * Vt, U * np.sqrt(s)] + [np.eye(r)] * (L - 3) + [P.T - 0.5, np.eye(Kr)]


def lowrank_params(problem: ReLUDeepProblem, r: int | None = None) -> ReLUParams:
  r"""The parameters of :func:`ufm.theory.relu_lowrank` for ``problem`` (balanced, every weight decay ``> 0``):
  ``blocks`` :math:`T(r)` blocks on the first classes, DNC on the rest, each group's ``L + 1`` factors scaled by
  AM-GM (:math:`\lambda_jt_j^2\|F_j\|^2` equal across ``j``, :math:`\lambda_0 = n\lambda_H`, product of the scales
  ``z``), placed in consecutive coordinates of every layer.

  Raises:
    ValueError: naming ``counts`` (imbalanced), ``lam_W``/``lam_H`` (a zero decay), ``widths`` (too narrow: the
      blocks need ``blocks * r + rest`` hidden coordinates and ``K`` at layer ``L``), or, through
      :func:`ufm.theory.relu_lowrank`, ``K``, ``L`` or ``r``.
  """
  K, L = problem.K, problem.depth
  if not problem.balanced:
    raise ValueError(f"counts = {problem.counts}: the low-rank construction is for balanced counts")
  lam = np.asarray(problem.lams(), np.float64)
  lam_H = float(np.asarray(problem.lam_H))
  if np.any(lam <= 0) or lam_H <= 0:
    raise ValueError(f"lam_W = {lam.tolist()}, lam_H = {lam_H}: the low-rank construction needs every weight decay "
                     "> 0")
  n = problem.counts[0]
  sol = theory.relu_lowrank(K, n, L, lam, lam_H, r=r)
  block = lowrank_factors(sol.r, L)
  Kr = block[-1].shape[0]
  groups = [(block, float(sol.z), Kr)] * sol.blocks + [([np.ones((1, 1))] * (L + 1), float(sol.z_rest), 1)] * (
      K - sol.blocks * Kr)
  need = tuple(sum(F[j].shape[0] for F, _, _ in groups) for j in range(L))
  if any(w < q for w, q in zip(problem.widths, need)):
    raise ValueError(f"widths = {problem.widths}: the low-rank construction (r = {sol.r}, {sol.blocks} block(s)) "
                     f"needs widths >= {need}")
  weights = np.concatenate([[n * lam_H], lam])
  outs = problem.widths[1:] + (K,)
  mats = [np.zeros((problem.widths[0], K))] + [np.zeros((outs[l], problem.widths[l])) for l in range(L)]
  off = [0] * L  # next free coordinate of layers 1..L (the output of factor j lives in layer j + 1)
  cls = 0
  for Fs, z, kb in groups:
    c = np.array([w * np.sum(F**2) for w, F in zip(weights, Fs)])
    E = np.exp(np.mean(np.log(c))) * z ** (2.0 / (L + 1))
    t = np.sqrt(E / c)
    for j, F in enumerate(Fs):
      rows = slice(off[j], off[j] + F.shape[0]) if j < L else slice(cls, cls + kb)
      cols = slice(cls, cls + kb) if j == 0 else slice(off[j - 1], off[j - 1] + F.shape[1])
      mats[j][rows, cols] = t[j] * F
    for j in range(L):
      off[j] += Fs[j].shape[0]
    cls += kb
  dt = problem.dtype
  H = jnp.asarray(mats[0] @ np.asarray(problem.Y, np.float64), dt)
  return ReLUParams(Ws=tuple(jnp.asarray(m, dt) for m in mats[1:]), H=H, b=jnp.zeros((K,), dt))
