"""Test helpers. The tolerance table and the assertion helpers live in :mod:`ufm.testing` (one table, each
entry with its reason; users' claims use it too) and are re-exported here so the suite keeps importing them
from ``helpers``."""

import math

import jax.numpy as jnp

from ufm.testing import TOL, assert_close, rel_error, rel_frobenius, tol  # noqa: F401  (re-exports)


def lams_at_tau(tau, K, n, ratio=0.5):
  """(lam_W, lam_H) with lam_H = ratio * lam_W and collapse index K sqrt(n lam_W lam_H) = tau."""
  lam_W = tau / (K * math.sqrt(n * ratio))
  return lam_W, ratio * lam_W


def ce_minimiser_params(problem):
  """The balanced CE minimiser built from the closed form (no solver): rows of W a simplex ETF of squared
  norm t = ||W||^2 / K, features h_{k,i} = rho w_k with rho = sqrt(lam_W / (n lam_H)) (Zhu et al. 2021)."""
  from ufm import theory
  from ufm.problem import Params
  t = theory.predict(problem).norm_W_sq / problem.K
  W = math.sqrt(t) * theory.simplex_etf(problem.K, problem.d).T
  rho = math.sqrt(float(problem.lam_W) / (problem.counts[0] * float(problem.lam_H)))
  return Params(W=W, H=rho * W.T @ problem.Y, b=jnp.zeros(problem.K))
