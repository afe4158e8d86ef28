r"""The vicinity UFM's claims.

Tirer, Huang & Niles-Weed 2023, arXiv 2210.16658: the near-collapse linearised map
and the within-class contraction of :mod:`ufm.vicinity`, each checked by its own computation in the check (the plain
reference solve supplies ``W``). Section numbers (§) refer to ``ufm/theory/derivations.md``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ufm import theory
from ufm.claims.core import Claim
from ufm.problem import Params
from ufm.testing import problem_specs, rel_error

__all__ = ["CLAIMS"]


_VICINITY_BETA = 100.0  # the paper's Fig. 1 value


def _vicinity_map_check(problem, sol, th):
  """The implicit Jacobian dH*/dH0 at the collapsed base point against the exact near-collapse forms."""
  from ufm import vicinity
  lam_W, lam_H = float(problem.lam_W), float(problem.lam_H)
  bp = theory.vicinity_base_point(problem.K, problem.n, problem.d, lam_W, lam_H, key=jax.random.key(0))
  vp = vicinity.make_vicinity_problem(bp.H0, problem.counts, lam_W=lam_W, lam_H=lam_H, beta=_VICINITY_BETA)
  F = vicinity.linearised_map(vp, Params(W=bp.W0, H=bp.H0, b=jnp.zeros(problem.K)))
  s_kk = np.linalg.svd(np.asarray(vicinity.class_blocks(F, problem.counts, 0, 0)), compute_uv=False)
  s_x = np.linalg.svd(np.asarray(vicinity.class_blocks(F, problem.counts, 0, 1)), compute_uv=False)
  m = theory.vicinity_linearised_map(lam_W, lam_H, _VICINITY_BETA)
  return {"smax_kk": rel_error(s_kk.max(), m.smax_kk, "implicit_map"),
          "smin_kk": rel_error(s_kk.min(), m.smin_kk, "implicit_map"),
          "smax_cross": rel_error(s_x.max(), m.smax_cross, "implicit_map")}


VICINITY_NEAR_COLLAPSE = Claim(
    name="vicinity_near_collapse_map",
    source="Tirer, Huang & Niles-Weed 2023 (arXiv 2210.16658), near-collapse theorem, exact forms of "
           "ufm.theory.vicinity_linearised_map (derivations §10)",
    statement="Balanced bias-free MSE vicinity UFM (paper normalisation), d > K, n >= 2, sqrt(lam_H lam_W) < 1, "
              "beta = 100: at the collapsed beta = 0 minimiser, the (dn)x(dn) class blocks of dH*/dH0 have "
              "sigma_max(F_kk) = 1, sigma_min(F_kk) = beta/(beta + sqrt(lam_H/lam_W)), "
              "sigma_max(F_kk~) = 2 lam_H (1-c)/(beta + 4 lam_H (1-c)).",
    problems=problem_specs(K=(2, 3), n=(2, 3), counts="balanced", d_offsets=(1, 2), loss="mse", bias=False,
                           regime="free", lam=(1e-2, 0.9)),
    theory=lambda problem: None, check=_vicinity_map_check,
    tolerances={"smax_kk": "implicit_map", "smin_kk": "implicit_map", "smax_cross": "implicit_map"},
)


def _contraction_check(problem, sol, th):
  """Sigma_W(H*(W)) = A Sigma_W(H0) A and the trace bound, at the solved W and a perturbed H0."""
  from ufm import vicinity
  W = jnp.asarray(sol.params.W)
  H0 = jnp.asarray(sol.params.H) + 0.3 * jax.random.normal(jax.random.key(1), np.shape(sol.params.H), W.dtype)
  lam_H, out = float(problem.lam_H), {"identity": 0.0, "trace_bound": 0.0}
  for beta in (0.5, 5.0):
    H = vicinity.optimal_features(W, problem.Y, H0, lam_H, beta)
    A = theory.contraction_map(W, lam_H, beta)
    SW0, SW = (vicinity.within_class_covariance(X, problem.labels, problem.K) for X in (H0, H))
    out["identity"] = max(out["identity"], rel_error(SW, A @ SW0 @ A, "identity_solve"))
    excess = float(jnp.trace(SW)) - (beta / (beta + lam_H)) ** 2 * float(jnp.trace(SW0))
    out["trace_bound"] = max(out["trace_bound"], max(excess, 0.0) / max(float(jnp.trace(SW0)), 1e-300))
  return out


VICINITY_CONTRACTION = Claim(
    name="vicinity_contraction",
    source="Tirer, Huang & Niles-Weed 2023 (arXiv 2210.16658); A with the lam_H term as derived in derivations §10.5",
    statement="MSE vicinity UFM, any counts and W: the within-class covariance of H*(W) is A Sigma_W(H0) A with "
              "A = beta (W^T W + (lam_H + beta) I)^-1, so tr Sigma_W(H*) <= (beta/(beta + lam_H))^2 tr Sigma_W(H0).",
    problems=problem_specs(K=(2, 3), n=(2, 3), counts=("balanced", "step"), d_offsets=(1,), loss="mse", bias=False,
                           regime="free", lam=(1e-3, 1.0)),  # n >= 2: a within-class covariance to contract
    theory=lambda problem: None, check=_contraction_check,
    tolerances={"identity": "identity_solve", "trace_bound": "identity_solve"},
)



#: The vicinity UFM's claims.
CLAIMS = (VICINITY_NEAR_COLLAPSE, VICINITY_CONTRACTION)
