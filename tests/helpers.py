"""The tolerance table (one place, each entry with its reason) and assertion helpers."""

import math

import jax.numpy as jnp
import numpy as np

# name -> (rtol, atol, reason). Everything is float64 unless the name says otherwise.
TOL = {
    # Two closed forms, or a closed form against an exact construction: only rounding separates them.
    "exact": (1e-10, 1e-12, "identities in float64: rounding of O(K^2) flops on O(1) numbers"),
    # L-BFGS reference solve (gtol 1e-10) against a closed form. Measured: objective 1e-16, norms 1e-9..1e-11,
    # Grams 1e-9 relative. The distance to the minimiser set is ~ |grad| / (smallest non-zero Hessian
    # eigenvalue), so 1e-8 holds with margin when that eigenvalue is >= 1e-2 (checked by the grid chosen).
    "reference": (1e-8, 1e-9, "float64 L-BFGS to |grad| <= 1e-10 (STYLE.md B.8: 1e-8)"),
    # An NC metric at an L-BFGS solution against its closed-form target: metrics are smooth (Lipschitz with
    # constants O(10) on these problems) in the parameters, which are known to 1e-8; atol for targets 0.
    "reference_metric": (1e-6, 1e-7, "metric at a 1e-8-accurate minimiser, Lipschitz constant O(10)"),
    # float32: unit roundoff 6e-8 times the condition of the small solves.
    "float32": (1e-4, 1e-5, "float32 rounding (eps 1.2e-7) amplified by O(10^2)"),
    # The argmin (norms, Grams) in float32: near a minimum f changes only quadratically, so rounding of f at
    # eps_32 = 1.2e-7 leaves the parameters determined to ~sqrt(eps_32) = 3.5e-4 times a condition factor.
    "float32_argmin": (2e-3, 1e-5, "argmin in float32: sqrt(eps_32) = 3.5e-4 x condition (measured 4e-4)"),
    # Our metrics against rhubarbwu/neural-collapse run in float64 on the same arrays.
    "peer": (1e-10, 1e-12, "the same formulas in float64 in two libraries"),
}


def tol(name):
  rtol, atol, _ = TOL[name]
  return dict(rtol=rtol, atol=atol)


def assert_close(actual, expected, name, msg=""):
  np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                             err_msg=f"[{name}: {TOL[name][2]}] {msg}", **tol(name))


def rel_frobenius(actual, expected):
  """||A - B||_F / max(||B||_F, 1e-300): the neural-tangents ``assert_close_matrices`` measure."""
  a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


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
