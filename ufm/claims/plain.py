r"""The plain UFM's claims.

Zhu et al. 2021 (balanced CE), Tirer & Bruna 2022 and Zhou et al. 2022 (MSE), Dang et al.
2023 at depth 1 (the general orthogonal frame), the closed forms derived in :mod:`ufm.theory` (imbalanced MSE with a
bias, a regularised bias, rank truncation), the NC metric targets and the benign landscapes, and the refuted reading
of Zhou et al. with a regularised bias.

Each claim compares a float64 L-BFGS reference solve (:func:`ufm.solvers.lbfgs_reference`, to
``|grad| <= 1e-12``) with a closed form, through residuals of :func:`ufm.testing.rel_error` bounded by the
:data:`ufm.testing.TOL` entries ``"reference"`` and ``"reference_metric"``. Gram matrices are compared, never the
vectors, because every minimiser is determined only up to a rotation :math:`(W, H) \to (WQ^\top, QH)`. Problem
domains: :mod:`ufm.claims.helpers`. Section numbers (§) refer to ``ufm/theory/derivations.md``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from ufm import metrics as _metrics
from ufm import theory
from ufm.claims.core import Claim
from ufm.claims.helpers import (GTOL, IMBALANCED_COUNTS, MARGIN, arrays, ce_specs, class_means, collapse, lams,
                                mse_specs, off_thresholds, unit)
from ufm.testing import ProblemSpec, problem_specs, rel_error

__all__ = ["CLAIMS"]

# ----------------------------------------------------------------------------- balanced CE


def _ce_theory(problem):
  """``(tau, CEBalanced)`` for a balanced CE problem (Zhu et al. 2021 + the norm reduction of ce_balanced)."""
  lam_W, lam_H = lams(problem)
  sol = theory.ce_balanced(problem.K, problem.n, lam_W, lam_H)
  tau = float(theory.collapse_threshold(problem.K, problem.n, lam_W, lam_H))
  return tau, {k: float(v) for k, v in sol._asdict().items()}


def _ce_geometry_check(problem, sol, th):
  _, c = th
  W, H, b = arrays(sol)
  M = class_means(problem, H)
  out = {"gram_W": rel_error(unit(W @ W.T), theory.etf_target(problem.K)),
         "collapse": collapse(problem, H),
         "self_duality": rel_error(M, c["ratio"] * W.T)}
  if problem.bias:
    out["bias"] = rel_error(b, np.zeros_like(b))
  return out


def _ce_norms_check(problem, sol, th):
  _, c = th
  W, H, _ = arrays(sol)
  t, rho = c["norm_w_sq"], c["ratio"]
  return {"objective": rel_error(sol.objective, c["objective"]),
          "norm_W_sq": rel_error(np.sum(W**2), problem.K * t),
          "norm_H_sq": rel_error(np.sum(H**2), problem.N * rho**2 * t)}


def _ce_threshold_check(problem, sol, th):
  tau, c = th
  W, H, _ = arrays(sol)
  dead = tau >= 1  # from collapse_threshold alone
  t, rho = (0.0, 0.0) if dead else (c["norm_w_sq"], c["ratio"])
  return {"norm_W_sq": rel_error(np.sum(W**2), problem.K * t),
          "norm_H_sq": rel_error(np.sum(H**2), problem.N * rho**2 * t),
          "objective": rel_error(sol.objective, math.log(problem.K) if dead else c["objective"])}


def _ce_bias_free_b_check(problem, sol, th):
  W, H, b = arrays(sol)
  _, c = th
  return {"bias_spread": rel_error(b - b.mean(), np.zeros_like(b)),
          "gram_W": rel_error(unit(W @ W.T), theory.etf_target(problem.K)),
          "objective": rel_error(sol.objective, c["objective"])}


_ZHU = "Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1"


def _zhu_claim(*, regime: str, check, quantities: tuple[str, ...], **fields) -> Claim:
  """A claim on Zhu et al.'s balanced CE problems (bias or not, ``lam_b`` in {1e-2, 1}) at ``regime``, checked
  against :func:`_ce_theory`; every quantity in ``quantities`` at the ``"reference"`` tolerance."""
  return Claim(problems=ce_specs(bias=(False, True), lam_b=(1e-2, 1.0), regime=regime), theory=_ce_theory, check=check,
               tolerances=dict.fromkeys(quantities, "reference"), gtol=GTOL, **fields)


CE_ETF_GEOMETRY = _zhu_claim(
    name="ce_etf_geometry",
    source=_ZHU,
    statement="Balanced CE-UFM, d >= K-1, below the threshold: the rows of W form a simplex ETF, every feature "
              "equals its class mean, h_k = sqrt(lam_W/(n lam_H)) w_k, and b = 0 when lam_b > 0.",
    regime="below", check=_ce_geometry_check, quantities=("gram_W", "collapse", "self_duality", "bias"))

CE_NORMS = _zhu_claim(
    name="ce_norms",
    source=_ZHU + "; norm t* from the convex reduction in ufm.theory.ce_balanced (derivations §5.1)",
    statement="Balanced CE-UFM, below the threshold: ||W||^2 = K t*, ||H||^2 = N rho^2 t*, f* = g(t*), "
              "t* = max(0, log((K-1)(beta - K lam_W)/(K lam_W))/beta).",
    regime="below", check=_ce_norms_check, quantities=("objective", "norm_W_sq", "norm_H_sq"))

CE_COLLAPSE_THRESHOLD = _zhu_claim(
    name="ce_collapse_threshold",
    source=_ZHU + "; threshold from ufm.theory.collapse_threshold (derivations §5.1)",
    statement="Balanced CE-UFM: the global minimiser is W = 0, H = 0 (f* = log K) iff "
              "K sqrt(n lam_W lam_H) >= 1; below, the norms are those of ce_balanced.",
    regime="straddle", check=_ce_threshold_check, quantities=("norm_W_sq", "norm_H_sq", "objective"))

CE_UNREGULARISED_BIAS = Claim(
    name="ce_unregularised_bias",
    source=_ZHU,
    statement="Balanced CE-UFM with an unregularised bias (lam_b = 0): W is a simplex ETF and b is a multiple "
              "of the all-ones vector (only b's spread is determined).",
    problems=ce_specs(bias=True, lam_b=0.0, regime="below"),
    theory=_ce_theory, check=_ce_bias_free_b_check,
    # (gtol 1e-12 matters most here: the curvature along b ⊥ 1 is the softmax variance ~ e^(-margin), so
    # |grad| <= 1e-10 leaves b's spread at ~1e-9; tests/test_solvers.py, measured.)
    gtol=GTOL,
    tolerances={"bias_spread": "reference", "gram_W": "reference", "objective": "reference"},
)


# ----------------------------------------------------------------------------- MSE


def _mse_theory(problem):
  lam_W, lam_H = lams(problem)
  sol = theory.mse_minimiser(problem.counts, lam_W, lam_H, float(problem.lam_b), bias=problem.bias, d=problem.d)
  return jax.tree.map(lambda x: np.asarray(x, np.float64), sol)


def _mse_common(problem, sol, th):
  W, H, b = arrays(sol)
  return {"objective": rel_error(sol.objective, th.objective),
          "norm_W_sq": rel_error(np.sum(W**2), th.norm_W_sq),
          "norm_H_sq": rel_error(np.sum(H**2), th.norm_H_sq),
          "collapse": collapse(problem, H)}


def _orthogonal_frame_check(problem, sol, th):
  W, H, _ = arrays(sol)
  M = class_means(problem, H)
  F = np.asarray(theory.orthogonal_frame(problem.K), np.float64)  # d = K embedding; F^T F = I_K
  s2, h2 = th.norm_W_sq / problem.K, th.norm_H_sq / problem.N
  return {**_mse_common(problem, sol, th),
          "gram_W": rel_error(W @ W.T, s2 * F.T @ F),
          "gram_M": rel_error(M.T @ M, h2 * F.T @ F)}


def _etf_bias_check(problem, sol, th):
  W, H, b = arrays(sol)
  M = class_means(problem, H)
  K = problem.K
  return {**_mse_common(problem, sol, th),
          "gram_W": rel_error(unit(W @ W.T), theory.etf_target(K)),
          "gram_M": rel_error(unit(M.T @ M), theory.etf_target(K)) if th.norm_H_sq > 0 else 0.0,
          "bias": rel_error(b, np.full(K, 1.0 / K)),
          "global_mean": rel_error(H.mean(axis=1), np.zeros(H.shape[0]))}


def _mse_threshold_check(problem, sol, th):
  W, H, _ = arrays(sol)
  lam_W, lam_H = lams(problem)
  dead = float(theory.collapse_threshold(problem.K, problem.n, lam_W, lam_H)) >= 1
  # f(W = 0, H = 0) with the best bias: b = pi = (n_k/N) with a free bias, giving (1/2N)||Y - pi 1^T||^2; 1/2 without
  Y = np.asarray(problem.Y, np.float64)
  pi = np.asarray(problem.counts, np.float64) / problem.N
  zero = np.sum((Y - pi[:, None]) ** 2) / (2 * problem.N) if problem.bias else 0.5
  return {"norm_W_sq": rel_error(np.sum(W**2), 0.0 if dead else th.norm_W_sq),
          "norm_H_sq": rel_error(np.sum(H**2), 0.0 if dead else th.norm_H_sq),
          "objective": rel_error(sol.objective, zero if dead else th.objective)}


def _gof_theory(problem):
  r"""Derivations §1.3 at depth 1: :math:`\|w_k\|^2 = (\sqrt{n_k\lambda_H/\lambda_W} - N\lambda_H)_+`,
  :math:`\|\bar h_k\| = s_k/(s_k^2 + N\lambda_H)`, and the objective of ufm.theory.mse_minimiser."""
  lam_W, lam_H = lams(problem)
  n = np.asarray(problem.counts, np.float64)
  s2 = np.maximum(np.sqrt(n * lam_H / lam_W) - problem.N * lam_H, 0.0)
  h2 = s2 / (s2 + problem.N * lam_H) ** 2
  mse = _mse_theory(problem)
  return {"gram_W": np.diag(s2), "gram_M": np.diag(h2), "objective": float(mse.objective)}


def _gof_check(problem, sol, th):
  W, H, _ = arrays(sol)
  M = class_means(problem, H)
  return {"gram_W": rel_error(W @ W.T, th["gram_W"]), "gram_M": rel_error(M.T @ M, th["gram_M"]),
          "objective": rel_error(sol.objective, th["objective"]), "collapse": collapse(problem, H)}


def _prediction_check(problem, sol, pred):
  """Everything :func:`ufm.theory.predict` fixes: objective, norms, Grams, logits, bias, collapse."""
  W, H, b = arrays(sol)
  M = class_means(problem, H)
  out = {"objective": rel_error(sol.objective, pred.objective),
         "norm_W_sq": rel_error(np.sum(W**2), pred.norm_W_sq),
         "norm_H_sq": rel_error(np.sum(H**2), pred.norm_H_sq),
         "gram_W": rel_error(W @ W.T, pred.gram_W),
         "gram_M": rel_error(M.T @ M, pred.gram_M),
         "logits_M": rel_error(W @ M, pred.logits_M),
         "collapse": collapse(problem, H)}
  if problem.bias:
    out["bias"] = rel_error(b, pred.b)
  return out


_PRED_TOLS = {k: "reference" for k in
              ("objective", "norm_W_sq", "norm_H_sq", "gram_W", "gram_M", "logits_M", "collapse", "bias")}
_MSE_TOLS = {k: "reference" for k in ("objective", "norm_W_sq", "norm_H_sq", "collapse")}

MSE_ORTHOGONAL_FRAME = Claim(
    name="mse_orthogonal_frame",
    source="Tirer & Bruna 2022 (arXiv 2202.08087); constants from ufm.theory.mse_minimiser (derivations §5.4, §1.2)",
    statement="Balanced bias-free MSE-UFM, d >= K, below the threshold: W W^T = s^2 I_K and the class means "
              "form an orthogonal frame (features collapse), s^2 = sqrt(n lam_H/lam_W) - K n lam_H.",
    problems=mse_specs(counts="balanced", bias=False, d_offsets=(1, 0), regime="below"),
    theory=_mse_theory, check=_orthogonal_frame_check,
    tolerances={**_MSE_TOLS, "gram_W": "reference", "gram_M": "reference"},
    gtol=GTOL,
)

MSE_ETF_WITH_BIAS = Claim(
    name="mse_etf_with_bias",
    source="Zhou et al. 2022 (arXiv 2203.01238), global optimality with unconstrained features (derivations §5.3)",
    statement="Balanced MSE-UFM with an unregularised bias, d >= K-1, below the threshold: W and the class "
              "means are simplex ETFs, b = 1/K, the global feature mean is 0, features collapse.",
    problems=mse_specs(counts="balanced", bias=True, lam_b=0.0, d_offsets=(1, -1), regime="below"),
    theory=_mse_theory, check=_etf_bias_check,
    tolerances={**_MSE_TOLS, "gram_W": "reference", "gram_M": "reference", "bias": "reference",
                "global_mean": "reference"},
    gtol=GTOL,
)

MSE_COLLAPSE_THRESHOLD = Claim(
    name="mse_collapse_threshold",
    source="Zhou et al. 2022 (arXiv 2203.01238); Tirer & Bruna 2022 (arXiv 2202.08087); threshold from "
           "ufm.theory.collapse_threshold (derivations §1.2)",
    statement="Balanced MSE-UFM, bias-free or with an unregularised bias: the global minimiser is W = 0, H = 0 "
              "iff K sqrt(n lam_W lam_H) >= 1; below, the norms are those of mse_minimiser.",
    problems=mse_specs(counts="balanced", bias=(False, True), lam_b=0.0, d_offsets=(1, 0), regime="straddle"),
    theory=_mse_theory, check=_mse_threshold_check,
    tolerances={"norm_W_sq": "reference", "norm_H_sq": "reference", "objective": "reference"},
    gtol=GTOL,
)

MSE_GENERAL_ORTHOGONAL_FRAME = Claim(
    name="mse_general_orthogonal_frame",
    source="Dang et al. 2023 (arXiv 2301.00437) at depth 1, the general orthogonal frame (derivations §1.3)",
    statement="Imbalanced bias-free MSE-UFM, d >= K: W W^T = diag(s_k^2) with s_k^2 = (sqrt(n_k lam_H/lam_W) "
              "- N lam_H)_+, class means mutually orthogonal with ||h_k|| = s_k/(s_k^2 + N lam_H), features "
              "collapse; classes past their own threshold are 0.",
    problems=mse_specs(counts="explicit", explicit_counts=IMBALANCED_COUNTS, bias=False, d_offsets=(1, 0),
                  regime="straddle"),
    theory=_gof_theory, check=_gof_check,
    tolerances={"gram_W": "reference", "gram_M": "reference", "objective": "reference", "collapse": "reference"},
    gtol=GTOL,
)

MSE_IMBALANCED_BIAS = Claim(
    name="mse_imbalanced_bias",
    source="derived in ufm.theory.mse_minimiser (nuclear-norm reduction, centred SVD frame); the balanced case "
           "is Zhou et al. 2022 (arXiv 2203.01238)",
    statement="Imbalanced MSE-UFM with an unregularised bias, d >= K-1: b = pi - W h_G with h_G = 0, and W W^T, "
              "the class-mean Gram and the logits are those of the soft-thresholded SVD of (I - pi 1^T) D^{1/2}.",
    problems=mse_specs(counts="explicit", explicit_counts=IMBALANCED_COUNTS, bias=True, lam_b=0.0, d_offsets=(1, -1),
                  regime="straddle"),
    check=_prediction_check, tolerances=_PRED_TOLS,
    gtol=GTOL,
)

MSE_REGULARISED_BIAS = Claim(
    name="mse_regularised_bias",
    source="derived in ufm.theory.mse_minimiser (mean block; cf. arXiv 2606.00344 for the lam_b -> inf limit)",
    statement="Balanced MSE-UFM with a regularised bias (lam_b > 0), d >= K: the centred block is a simplex ETF "
              "and, once lam_b/(1+lam_b) > K sqrt(n lam_W lam_H), the features gain a non-zero global mean along "
              "a new direction; objective, norms, Grams, logits and b as ufm.theory.predict gives them.",
    problems=mse_specs(counts="balanced", bias=True, lam_b=(1e-3, 10.0), d_offsets=(1, 0), regime="below"),
    check=_prediction_check, tolerances=_PRED_TOLS,
    gtol=GTOL,
)


def _truncation_check(problem, sol, pred):
  best = int(np.argmin(sol.objective))
  W = np.asarray(sol.params.W[best], np.float64)
  return {"objective": rel_error(sol.objective[best], pred.objective), "gram_W": rel_error(W @ W.T, pred.gram_W)}


MSE_RANK_TRUNCATION = Claim(
    name="mse_rank_truncation",
    source="derived in ufm.theory.mse_minimiser (rank <= d: von Neumann's trace inequality keeps the problem "
           "separable over singular directions)",
    statement="Bias-free MSE-UFM with distinct class counts and d below the rank of the unconstrained "
              "minimiser: the minimum keeps the d directions with the largest objective decrease; the best of 4 "
              "L-BFGS inits reaches its objective and W W^T.",
    problems=mse_specs(counts="explicit", explicit_counts=((2, 1), (3, 1), (3, 2, 1), (5, 3, 1), (5, 3, 2, 1)),
                  bias=False, d_offsets=(-3, -2, -1), regime="below"),
    check=_truncation_check, inits=4, tolerances={"objective": "reference", "gram_W": "reference"},
    gtol=GTOL,
)


# ----------------------------------------------------------------------------- metrics and landscape


def _metrics_check(problem, sol, pred):
  params = jax.tree.map(jnp.asarray, sol.params)  # the metrics take JAX arrays (jaxtyping-checked in the tests)
  got = _metrics.compute(params, problem, tuple(pred.metrics))
  return {"metrics": max((rel_error(got[k], v, "reference_metric") for k, v in pred.metrics.items()), default=0.0)}


NC_METRIC_TARGETS = Claim(
    name="nc_metric_targets",
    source="Papyan, Han & Donoho 2020 (arXiv 2008.08186) metric definitions; values fixed by the closed forms "
           "of ufm.theory.predict",
    statement="At the global minimiser of a balanced CE- or MSE-UFM below the threshold, every NC metric that "
              "the closed form fixes (NC1 = 0, equinorm, equiangularity, ETF/OF errors, self-duality, GNC2, NC4 = 1, "
              "...) takes its predicted value.",
    problems=problem_specs(counts="balanced", d_offsets=(1,), bias=(False, True), lam_b=0.0,
                           margin=MARGIN, regime="below").filter(lambda s: s.loss == "mse" or not s.bias),
    check=_metrics_check, tolerances={"metrics": "reference_metric"},
    gtol=GTOL,
)


def _landscape_check(problem, sol, pred):
  W = np.asarray(sol.params.W, np.float64)  # [init, K, d]
  return {"objective": max(rel_error(f, pred.objective) for f in np.asarray(sol.objective)),
          "gram_W": max(rel_error(w @ w.T, pred.gram_W) for w in W)}


_LANDSCAPE_INITS = 16

CE_BENIGN_LANDSCAPE = Claim(
    name="ce_benign_landscape",
    source="Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.2 (strict saddles; condition d > K-1 as derivations §5.1 "
           "reads it)",
    statement=f"Balanced CE-UFM, d = K+1 > K-1: every critical point is a global minimiser or a strict saddle, so all "
              f"{_LANDSCAPE_INITS} random L-BFGS initialisations (scales 0.01..1) reach f* and the same W W^T.",
    problems=ce_specs(bias=(False, True), lam_b=(1e-2, 1.0), d_offsets=(1,), regime="below", init_scale=(0.01, 1.0)),
    check=_landscape_check, inits=_LANDSCAPE_INITS, tolerances={"objective": "reference", "gram_W": "reference"},
    gtol=GTOL,
)

MSE_BENIGN_LANDSCAPE = Claim(
    name="mse_benign_landscape",
    source="Zhou et al. 2022 (arXiv 2203.01238), benign landscape with unconstrained features",
    statement=f"Balanced MSE-UFM, bias-free or with an unregularised bias, d = K+1: no spurious local minima, so "
              f"all {_LANDSCAPE_INITS} random L-BFGS initialisations (scales 0.01..1) reach f* and the same W W^T.",
    problems=mse_specs(counts="balanced", bias=(False, True), lam_b=0.0, d_offsets=(1,), regime="below",
                  init_scale=(0.01, 1.0)),
    check=_landscape_check, inits=_LANDSCAPE_INITS, tolerances={"objective": "reference", "gram_W": "reference"},
    gtol=GTOL,
)


# ----------------------------------------------------------------------------- refuted


def _etf_only_check(problem, sol, th):
  W, _, _ = arrays(sol)
  return {"gram_W": rel_error(unit(W @ W.T), theory.etf_target(problem.K))}


MSE_REGULARISED_BIAS_KEEPS_ETF = Claim(
    name="mse_regularised_bias_keeps_etf",
    source="Zhou et al. 2022 (arXiv 2203.01238) read with lam_b > 0 (derivations §5.3 leaves open whether the "
           "theorem has lam_b = 0)",
    statement="Balanced MSE-UFM with a regularised bias (lam_b > 0), d >= K, below the threshold: W is a "
              "simplex ETF, as with lam_b = 0.",
    problems=problem_specs(loss="mse", counts="balanced", bias=True, lam_b=(1e-2, 100.0), d_offsets=(1, 0),
                           margin=MARGIN, regime="below").filter(off_thresholds),
    theory=lambda problem: None, check=_etf_only_check, tolerances={"gram_W": "reference"},
    expected="refuted",
    refuted_because="once lam_b/(1+lam_b) > K sqrt(n lam_W lam_H) the features' global mean becomes non-zero "
                    "along a direction outside the ETF's span, and W W^T gains a rank-one term along 1 "
                    "(ufm.theory.mse_minimiser, mean block); the ETF holds only for lam_b = 0 or below that point.",
    # hypothesis's minimal counterexample (seed 0): lam_b/(1+lam_b) = 0.5 > K sqrt(n lam_W lam_H) = 0.37
    counterexamples=(ProblemSpec(counts=(1, 1), d=3, lam_W=0.18394, lam_H=0.18394, lam_b=1.0, loss="mse", bias=True),),
    gtol=GTOL,
)



#: The plain UFM's claims, in the order of the scorecard.
CLAIMS = (
    CE_ETF_GEOMETRY, CE_NORMS, CE_COLLAPSE_THRESHOLD, CE_UNREGULARISED_BIAS,
    MSE_ORTHOGONAL_FRAME, MSE_ETF_WITH_BIAS, MSE_COLLAPSE_THRESHOLD, MSE_GENERAL_ORTHOGONAL_FRAME,
    MSE_IMBALANCED_BIAS, MSE_REGULARISED_BIAS, MSE_RANK_TRUNCATION,
    NC_METRIC_TARGETS, CE_BENIGN_LANDSCAPE, MSE_BENIGN_LANDSCAPE,
    MSE_REGULARISED_BIAS_KEEPS_ETF,
)
