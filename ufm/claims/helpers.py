r"""Shared pieces of the plain-UFM claim modules: solution arrays, class means, the NC1 residual, the problem domains.

Problem domains, and why they are what they are:

* shapes: ``K`` in {2, 3, 4, 5}, ``n`` in {1, 2, 3, 5}, ``d`` in {K+1, K-1} or {K+1, K} (as each
  theorem allows: a simplex ETF needs ``d >= K-1``, an orthogonal frame ``d >= K``; ``K+1`` first, so
  claims share their smallest shapes and the compilations); imbalanced counts from
  :data:`IMBALANCED_COUNTS`;
* weight decays: log-uniform collapse index :math:`\tau \in [0.05, 0.9]` (below the threshold)
  or :math:`[1.1, 3]` (above), ratio :math:`\lambda_H/\lambda_W \in [0.1, 10]`. Every singular
  direction of an MSE problem is kept 10% away from its own threshold (:func:`off_thresholds`):
  at a threshold the minimiser is degenerate (its Hessian has a zero eigenvalue beyond the
  rotations), and no finite-precision solve determines its norms to 1e-8.
"""

import math

import numpy as np

from ufm.problem import long_tailed_counts, step_counts
from ufm.testing import ProblemSpec, problem_specs, rel_error

__all__ = ["GTOL", "IMBALANCED_COUNTS", "MARGIN", "arrays", "ce_specs", "class_means", "collapse", "lams",
           "mse_singular_ratios", "mse_specs", "off_thresholds", "unit"]

MARGIN = 0.1  # distance of every collapse index from 1 (see the module docstring)
# Reference solves to |grad| <= 1e-12, not 1e-10: quantities that vanish at the minimiser (b with lam_b > 0, the
# global feature mean h_G with a bias) are checked absolutely (atol 1e-9), and their error is ~ gtol / (curvature
# along them), which is lam_b or lam_H and can be 1e-3 here: 1e-10 / 1e-3 = 1e-7 was measured (h_G, lam_H = 0.025:
# 1.4e-8). Solving tighter, not loosening atol (as tests/test_solvers.py does for CE with a free bias).
GTOL = 1e-12


def arrays(sol):
  """``(W, H, b)`` of a solution as float64 NumPy arrays."""
  return tuple(np.asarray(x, np.float64) for x in sol.params)


def class_means(problem, H):
  """``d x K`` class means :math:`\\bar h_k = \\frac{1}{n_k}\\sum_i h_{k,i}`."""
  return H @ np.asarray(problem.Y).T / np.asarray(problem.counts, np.float64)[None, :]


def collapse(problem, H):
  """NC1 as a residual: :math:`\\|H - \\bar H Y\\|_F / \\|H\\|_F` (0 iff every feature equals its class mean)."""
  return rel_error(H, class_means(problem, H) @ np.asarray(problem.Y), "reference")


def unit(G):
  """``G / ||G||_F`` (``G`` itself when it is 0)."""
  n = np.linalg.norm(G)
  return G / n if n > 0 else G


def mse_singular_ratios(spec: ProblemSpec) -> np.ndarray:
  r""":math:`\sigma_i/\mu` for every singular direction of the MSE problem (mse_minimiser's reduction): the
  centred block :math:`\sigma(P D^{1/2})` and, with a regularised bias and balanced counts, the mean block
  :math:`\gamma\sqrt n`; against :math:`\mu = N\sqrt{\lambda_W\lambda_H}`. A direction is active iff its ratio
  is > 1."""
  n = np.asarray(spec.counts, np.float64)
  N, K = n.sum(), len(n)
  pi = n / N
  P = np.eye(K) - np.outer(pi, np.ones(K)) if spec.bias else np.eye(K)
  sig = np.linalg.svd(P * np.sqrt(n)[None, :], compute_uv=False)
  mu = N * math.sqrt(spec.lam_W * spec.lam_H)
  ratios = list(sig / mu)
  if spec.bias and spec.lam_b > 0:
    gamma = spec.lam_b / (1 + spec.lam_b)
    ratios.append(gamma * math.sqrt(N) * np.linalg.norm(pi) / mu)
  return np.asarray(ratios)


def off_thresholds(spec: ProblemSpec) -> bool:
  """Every singular direction of an MSE problem at least 10% from its threshold (ratio 0 is a dead one)."""
  r = mse_singular_ratios(spec)
  return bool(np.all((r < 1e-12) | (np.abs(r - 1) > MARGIN)))


#: Imbalanced count vectors of the MSE claims: step (Fang et al. 2021) and long-tailed (Cao et al. 2019) profiles.
#: A fixed list, because every count vector compiles the solver once more (a drawn profile would rarely repeat).
IMBALANCED_COUNTS = (
    step_counts(2, K_major=1, n_major=2, n_minor=1),      # (2, 1)
    step_counts(2, K_major=1, n_major=5, n_minor=1),      # (5, 1)
    step_counts(3, K_major=1, n_major=5, n_minor=2),      # (5, 2, 2)
    step_counts(4, K_major=2, n_major=3, n_minor=1),      # (3, 3, 1, 1)
    long_tailed_counts(3, n_max=5, rho=5.0),              # (5, 2, 1)
    long_tailed_counts(4, n_max=5, rho=5.0),              # (5, 2, 1, 1)
    long_tailed_counts(5, n_max=5, rho=2.0),              # (5, 4, 3, 2, 2)
)


def ce_specs(**kw):
  kw.setdefault("d_offsets", (1, -1))  # d = K+1 and K-1 (the tightest ETF)
  return problem_specs(loss="ce", counts="balanced", margin=MARGIN, **kw)


def mse_specs(**kw):
  return problem_specs(loss="mse", margin=MARGIN, **kw).filter(off_thresholds)


def lams(problem):
  return float(problem.lam_W), float(problem.lam_H)
