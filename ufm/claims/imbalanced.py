r"""The imbalanced CE-UFM's claims.

Through the convex reduction of :mod:`ufm.convex` (derivations §5.5, §5.6): minority collapse (Fang et al. 2021,
arXiv 2101.12699) and SELI (Thrampoulidis, Kini, Vakilian & Behnia 2022, arXiv 2208.05512).

* ``imbalanced_ce_convex_meets_lbfgs`` (holds): the convex reduction's minimum is the global minimum of the full
  non-convex UFM: float64 L-BFGS reaches it (never below it), with the same classifier Gram.
* ``ce_convex_balanced_closed_form`` (holds): with balanced counts the convex reference has Zhu et al.'s minimum
  and a simplex-ETF classifier Gram.
* ``seli_grams_identities`` (holds): the class-level SELI Grams of :func:`ufm.convex.seli_grams` are the SVD factors
  of the N-column SEL matrix, and depend on the count ratios only.
* ``minority_collapse_at_finite_ratio`` (holds-when): Fang et al.'s Thm. 5 proves minority collapse only as the
  imbalance ratio tends to infinity; the convex reference finds the minority classifiers *coincide exactly* (a rank
  drop, relative spread at rounding level) at a finite ratio, while their norm is still O(1).
* ``seli_distance_at_lambda_1e-5`` (refuted): the reading of Thrampoulidis et al.'s Thm. 2 as "at lambda = 1e-5 the
  classifier Gram is within about 1e-2 of SELI": the distance decreases like 1/log(1/lambda) and is about 5e-2
  there.
* ``seli_limit_with_free_bias`` (refuted) and ``seli_limit_bias_free`` (holds-when): the SELI limit is a statement
  about the bias-free model; with an unregularised bias the distance levels off (about 0.12 at lambda = 1e-7).

The limits themselves (lambda -> 0, R -> infinity) have no finite check; see :mod:`ufm.claims.catalogue`.
"""

import jax.numpy as jnp
import numpy as np

from ufm import convex, theory
from ufm.claims.core import Claim
from ufm.claims.helpers import GTOL, unit
from ufm.testing import ProblemSpec, Tolerance, problem_specs, rel_error

__all__ = ["CLAIMS"]

_FANG = "Fang et al. 2021 (arXiv 2101.12699)"
_SELI = "Thrampoulidis et al. 2022 (arXiv 2208.05512)"
_STEP = ((10, 10, 2, 2), (10, 5, 2, 2), (10, 7, 4, 1), (10, 2, 2, 2))


def _explicit(counts, lam, *, bias=False, lam_b=0.0, d_offsets=(0,)):
  """CE problems on explicit counts, lam_W = lam_H log-uniform on ``lam`` (the convex problem sees
  sqrt(lam_W lam_H) only), d = K (the reduction is exact for d >= rank X)."""
  base = problem_specs(counts="explicit", explicit_counts=counts, loss="ce", bias=bias, lam_b=lam_b,
                       d_offsets=d_offsets, regime="free", lam=lam)
  return base.map(lambda s: s._replace(lam_H=s.lam_W))


def _lams(problem):
  return float(problem.lam_W), float(problem.lam_H)


def _meets_check(problem, sol, th):
  lam_W, lam_H = _lams(problem)
  lam_b = float(problem.lam_b) if problem.bias else 0.0
  ref = convex.ce_convex(problem.counts, lam_W, lam_H, lam_b, bias=problem.bias)
  if not bool(ref.converged):  # a comparison with an unconverged reference decides nothing: a failing example
    raise ValueError(f"the convex reference did not converge (kkt {float(ref.kkt):.2g})")
  f, f_ref = float(sol.objective), float(ref.objective)
  W = np.asarray(sol.params.W, np.float64)
  return {"gap": (f - f_ref) / abs(f_ref), "below": max(f_ref - f, 0.0) / abs(f_ref),
          "gram_W": rel_error(W @ W.T, np.asarray(convex.classifier_gram(ref.X, lam_W, lam_H)), "reference_metric")}


IMBALANCED_CE_CONVEX_MEETS_LBFGS = Claim(
    name="imbalanced_ce_convex_meets_lbfgs",
    source="derived in ufm.convex (nuclear-norm reduction, derivations §5.5); the setting of " + _FANG,
    paper=_FANG,
    statement="Imbalanced CE-UFM (step and long-tailed counts), d = K, bias-free or with a (regularised or free) "
              "bias: float64 L-BFGS reaches the convex reduction's minimum (to 1e-8 relative, never below it by "
              "more than rounding) and the same classifier Gram W W^T.",
    problems=problem_specs(counts="explicit", explicit_counts=((3, 1), (5, 2, 1), (6, 5, 1), (10, 10, 2, 2),
                                                              (12, 7, 4, 1)),
                           loss="ce", bias=(False, True), lam_b=(1e-2, 1.0), d_offsets=(0,), regime="free",
                           lam=(1e-3, 3e-2)),
    check=_meets_check, theory=lambda problem: None, gtol=GTOL, max_steps=6000,
    tolerances={"gap": "reference", "below": "exact", "gram_W": "reference_metric"},
)


def _balanced_check(problem, sol, th):
  lam_W, lam_H = _lams(problem)
  cf = theory.ce_balanced(problem.K, problem.counts[0], lam_W, lam_H)
  G = np.asarray(convex.classifier_gram(sol.X, lam_W, lam_H))
  return {"objective": rel_error(float(sol.objective), float(cf.objective)),
          "gram_W": rel_error(unit(G), np.asarray(theory.etf_target(problem.K)), "reference_metric")}


CE_CONVEX_BALANCED = Claim(
    name="ce_convex_balanced_closed_form",
    source="Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1, through the convex reduction of ufm.convex",
    paper="Zhu et al. 2021",
    statement="Balanced CE-UFM below the collapse threshold, bias-free or with a bias: the convex reduction's "
              "minimum is ufm.theory.ce_balanced's, and its classifier Gram is a simplex ETF.",
    problems=problem_specs(K=(2, 3, 4, 5), n=(1, 2, 5), loss="ce", bias=(False, True), lam_b=(1e-2, 1.0),
                           d_offsets=(0,), regime="below", ratio=(1.0, 1.0), margin=0.1),
    solver="convex", check=_balanced_check, theory=lambda problem: None,
    tolerances={"objective": "reference", "gram_W": "reference_metric"},
)


def _seli_identities_check(problem, sol, th):
  counts = np.asarray(problem.counts, np.float64)
  K = len(counts)
  GW, GH = (np.asarray(x) for x in convex.seli_grams(jnp.asarray(counts)))
  GW7, GH7 = (np.asarray(x) for x in convex.seli_grams(jnp.asarray(7.0 * counts)))
  Y = np.asarray(problem.Y, np.float64)
  U, s, Vt = np.linalg.svd((np.eye(K) - 1.0 / K) @ Y, full_matrices=False)
  first = np.cumsum((0,) + tuple(problem.counts[:-1]))
  SW = (U * s) @ U.T
  SH = ((Vt.T * s) @ Vt)[np.ix_(first, first)]
  return {"svd_W": rel_error(GW, unit(SW), "exact"), "svd_H": rel_error(GH, unit(SH), "exact"),
          "ratio_only": max(rel_error(GW7, GW, "exact"), rel_error(GH7, GH, "exact"))}


SELI_GRAMS = Claim(
    name="seli_grams_identities",
    source=_SELI + ", Definition 2 (SELI); class-level forms derived in ufm.convex.seli_grams (derivations §5.6)",
    paper=_SELI,
    statement="For any counts, (A D A)^(1/2) and D^(-1/2)(D^(1/2) A D^(1/2))^(1/2) D^(-1/2) (A = I - 11^T/K, "
              "D = diag(n_k)), normalised, are the Grams U S U^T and the class-mean block of V S V^T of the SEL "
              "matrix (I - 11^T/K) Y = U S V^T, and they depend on the count ratios only.",
    problems=problem_specs(K=(2, 3, 4, 5), n=(1, 2, 5), counts=("balanced", "step", "long_tailed"), loss="ce",
                           bias=False, regime="below"),
    solver="none", check=_seli_identities_check, theory=lambda problem: None,
    tolerances={"svd_W": "exact", "svd_H": "exact", "ratio_only": "exact"},
)


def _minority_check(problem, sol, th):
  lam_W, lam_H = _lams(problem)
  K_A = sum(1 for c in problem.counts if c == problem.counts[0])
  s = convex.minority_stats(convex.classifier_factor(sol.X, lam_W, lam_H), K_A)
  return {"spread_minor": float(s["spread_minor"]),
          "vanished": max(1e-3 - float(s["norm_minor"]) / float(s["norm_major"]), 0.0)}


# K_A = K_B = 5 only: the finite ratio depends on K_A, K_B (measured: K_A = K_B = 3, counts (100,)*3 + (4,)*3 at
# lam = 5.2e-3, R = 25, still distinct minority classifiers, relative spread 0.3)
_MC_COUNTS = ((100,) * 5 + (4,) * 5, (120,) * 5 + (4,) * 5)

MINORITY_COLLAPSE_FINITE_RATIO = Claim(
    name="minority_collapse_at_finite_ratio",
    source=_FANG + ", Thm. 5 (minority collapse as R -> infinity) and Finding 2 (numerical)",
    paper=_FANG,
    statement="Bias-free imbalanced CE-UFM, K_A majority classes of n_A and K_B minority classes of n_B: the "
              "minority classifiers collapse onto one another (exactly: relative spread <= 1e-6) while keeping a "
              "non-zero norm (at least 1e-3 of the majority norm; measured >= 0.065 here).",
    problems=_explicit(_MC_COUNTS, (5e-3, 6e-3)),
    solver="convex", check=_minority_check, theory=lambda problem: None,
    tolerances={"spread_minor": Tolerance(1e-6, "coincidence threshold of ufm.convex.minority_stats; a rank drop "
                                                "of the convex solution, measured at rounding level (1e-15)"),
                "vanished": Tolerance(1e-12, "the norm condition is an inequality: any shortfall fails")},
    expected="holds-when",
    holds_when="at a finite imbalance ratio: K_A = K_B = 5, R = n_A/n_B >= 25 at lam = 5e-3..6e-3 with n_B = 4 "
               "(the convex problem of n_B = 100, lam = 1e-3 and R >= 25, since counts scale out as (c n_k, "
               "lam/sqrt(c))), not only in the limit R -> infinity that Thm. 5 proves; the ratio depends on K_A, "
               "K_B (K_A = K_B = 3: still distinct at R = 25)",
)


def _seli_distance(problem, sol):
  lam_W, lam_H = _lams(problem)
  TW, _ = convex.seli_grams(jnp.asarray(problem.counts, jnp.float64))
  return float(convex.gram_distance(convex.classifier_gram(sol.X, lam_W, lam_H), TW))


_SELI_RATE_EXAMPLE = ProblemSpec(counts=(10, 10, 2, 2), d=4, lam_W=1e-5, lam_H=1e-5, loss="ce")

SELI_RATE = Claim(
    name="seli_distance_at_lambda_1e-5",
    source=_SELI + ", Thm. 2 read as a rate (the classifier Gram within about 1e-2 of SELI at lambda = 1e-5)",
    paper=_SELI,
    statement="Bias-free imbalanced CE-UFM with step or long-tailed counts at lam_W = lam_H = 1e-5: the normalised "
              "W W^T is within 2e-2 (the statement's 1e-2 with a factor 2 of slack) of the SELI Gram.",
    problems=_explicit(_STEP, (1e-5, 1e-5)),
    solver="convex", check=lambda p, sol, th: {"distance": _seli_distance(p, sol)}, theory=lambda problem: None,
    tolerances={"distance": Tolerance(2e-2, "the statement's own figure, 1e-2, with a factor 2 of slack")},
    expected="refuted",
    refuted_because="the distance to SELI decreases only like 1/log(1/lambda): 0.133, 0.083, 0.062 at lambda = "
                    "1e-2, 1e-3, 1e-4 and about 0.05 at 1e-5 for counts (10, 10, 2, 2); 1e-2 is not reached even "
                    "at lambda = 1e-7 (0.04).",
    counterexamples=(_SELI_RATE_EXAMPLE,),
)

SELI_BIAS_FREE = Claim(
    name="seli_limit_bias_free",
    source=_SELI + ", Thm. 2 (bias-free UFM)",
    paper=_SELI,
    statement="Bias-free imbalanced CE-UFM with step or long-tailed counts: at lambda in [1e-7, 3e-7] the "
              "normalised W W^T is within 5e-2 of the SELI Gram (the distance decreases strictly towards 0).",
    problems=_explicit(_STEP, (1e-7, 3e-7)),
    solver="convex", check=lambda p, sol, th: {"distance": _seli_distance(p, sol)}, theory=lambda problem: None,
    tolerances={"distance": Tolerance(5e-2, "measured 0.04 at lambda = 1e-7; a limit is approached like "
                                            "1/log(1/lambda), so a finite check bounds the distance, not 0")},
    expected="holds-when",
    holds_when="without a bias (with an unregularised bias the limit is not SELI: seli_limit_with_free_bias)",
)

SELI_FREE_BIAS = Claim(
    name="seli_limit_with_free_bias",
    source=_SELI + ", Thm. 2 read for a UFM with an unregularised bias",
    paper=_SELI,
    statement="Imbalanced CE-UFM with an unregularised bias, step counts: at lambda in [1e-7, 3e-7] the normalised "
              "W W^T is within 5e-2 of the SELI Gram, as without a bias.",
    problems=_explicit(((10, 10, 2, 2),), (1e-7, 3e-7), bias=True),
    solver="convex", check=lambda p, sol, th: {"distance": _seli_distance(p, sol)}, theory=lambda problem: None,
    tolerances={"distance": Tolerance(5e-2, "the bias-free model's distance at these lambda (measured 0.04)")},
    expected="refuted",
    refuted_because="with a free bias the distance to SELI levels off instead of tending to 0: about 0.12 for W W^T "
                    "(0.56 for the class means) at lambda = 1e-5..1e-7, counts (10, 10, 2, 2); the SELI limit is a "
                    "statement about the bias-free model.",
    counterexamples=(ProblemSpec(counts=(10, 10, 2, 2), d=4, lam_W=1e-7, lam_H=1e-7, loss="ce", bias=True),),
)

#: The imbalanced CE-UFM's claims.
CLAIMS = (IMBALANCED_CE_CONVEX_MEETS_LBFGS, CE_CONVEX_BALANCED, SELI_GRAMS, MINORITY_COLLAPSE_FINITE_RATIO,
          SELI_BIAS_FREE, SELI_RATE, SELI_FREE_BIAS)
