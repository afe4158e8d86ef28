r"""The deep linear UFM's claims (Dang et al. 2023, arXiv 2301.00437; Garrod & Keating 2024, arXiv 2410.23169).

* ``deep_mse_minimiser`` (holds): the global minimiser of the deep linear MSE-UFM, any counts, depth ``M`` in
  {1, 2, 3}, bias-free or with an unregularised bias (:func:`ufm.theory.deep_mse_minimiser`: Dang et al.'s general
  orthogonal frame with the *global* threshold rule derived in :func:`ufm.theory.deep_threshold_ratio`), against
  the best of 4 float64 L-BFGS starts (single starts can stop at spurious local minima for ``M >= 2``). Drawn with
  every class's ratio :math:`b/n_k \le 0.3ho_M`: for ``M >= 2`` zero is always a local minimum, and nearer the
  threshold all 4 starts can end there (measured: ``counts = (1, 1)``, ``M = 2``, :math:`b/n_k = 0.73ho_2`,
  ``lam_H = 93``: every start at the zero point, 9% above the global minimum), a statement about the landscape,
  not the closed form; the threshold itself is ``deep_threshold_tie`` and ``deep_largest_root_rule``.
* ``deep_threshold_tie`` (holds): at :math:`b/n_k = \rho_M` the non-zero root and zero have equal objectives
  (the derivation of the threshold), evaluated in closed form.
* ``deep_largest_root_rule`` (refuted): Dang et al.'s code takes the largest root :math:`x_+` whenever it exists;
  for ``M >= 2`` and :math:`\rho_M \le b/n_k \le \varphi_M(x_*)` that point is a local minimum only, and zero is
  lower. Both points are evaluated on the full objective at explicit parameters.
* ``deep_ce_etf_every_depth`` (refuted): Dang et al.'s Thm. A.1, the ETF is the global minimiser of the balanced
  deep CE-UFM at every depth; Garrod & Keating's rank-``K/2`` block construction is lower for ``K >= 4, M >= 3``
  and ``K >= 6, M = 2`` (their Thm. 1).
* ``deep_ce_block_below_etf`` (holds-when): Garrod & Keating Thm. 1 as checked here, for weight decays in
  [1e-5, 1e-3] (their statement is for small enough decays; ``K = 4, M = 2``, outside the theorem's range, crosses
  over at :math:`\lambda n^{1/3} = 1.18\cdot10^{-2}`, derivations §11 A.3).

Every CE value here is a one-dimensional minimisation (:func:`ufm.theory.deep_ce_etf`,
:func:`ufm.theory.deep_ce_block`) evaluated again on the full objective at explicit parameters
(:func:`ufm.deep.balanced_factorisation`), so no claim compares a number with itself.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ufm import deep, theory
from ufm.claims.core import Claim
from ufm.testing import DeepSpec, Tolerance, deep_specs, rel_error
from hypothesis import strategies as st

__all__ = ["CLAIMS"]

_DANG = "Dang et al. 2023 (arXiv 2301.00437)"
_GK = "Garrod & Keating 2024 (arXiv 2410.23169)"
_DEEP_INITS = 4


@jax.jit
def _value(problem, params):
  return problem.value(params)


def _value_at(problem, Zbar) -> float:
  """The full deep objective at the balanced factorisation of the class-level logits ``Zbar``."""
  return float(_value(problem, deep.balanced_factorisation(jnp.asarray(Zbar), problem)))


@jax.jit
def _layer_metrics(params, problem):
  return deep.layer_metrics(params, problem, centred=False)


def _mse_theory(problem):
  return theory.deep_mse_minimiser(problem.counts, np.asarray(problem.lam_W), float(problem.lam_H), M=problem.depth,
                                   bias=problem.bias)


def _mse_check(problem, sol, th):
  best = int(np.argmin(sol.objective))
  params = jax.tree.map(lambda x: jnp.asarray(x[best]), sol.params)
  lm = _layer_metrics(params, problem)
  out = {"objective": rel_error(sol.objective[best], th.objective, "deep_reference"),
         "mean_grams": rel_error(lm["mean_grams"], th.mean_grams, "deep_reference"),
         "classifier_grams": rel_error(lm["classifier_grams"], th.classifier_grams, "deep_reference")}
  if problem.bias:
    out["bias"] = rel_error(params.b, th.b, "deep_reference")
  return out


DEEP_MSE_MINIMISER = Claim(
    name="deep_mse_minimiser",
    source=_DANG + ", Thm. 3.1 (general orthogonal frame), with the global threshold rule of "
           "ufm.theory.deep_threshold_ratio (derivations §1.3)",
    paper=_DANG,
    statement="Deep linear MSE-UFM, M in {1, 2, 3} layers of width K+1, any counts, bias-free or with a free bias, "
              "every class alive (b/n_k <= 0.3 rho_M): the global minimum, the class-mean Grams of every layer and "
              "the classifier Grams C_m C_m^T are those of ufm.theory.deep_mse_minimiser, and the best of 4 "
              "L-BFGS starts reaches them.",
    problems=deep_specs(K=(2, 3, 4), n=(1, 2, 3), counts=("balanced", "explicit"),
                        explicit_counts=((2, 1), (3, 2, 1), (3, 3, 1, 1)), M=(1, 2, 3), bias=(False, True),
                        regime="below", ratio=(0.05, 0.3), lam_W=(1e-2, 1e-1)),
    theory=_mse_theory, check=_mse_check, inits=_DEEP_INITS, gtol=1e-11, max_steps=20000,
    tolerances={k: "deep_reference" for k in ("objective", "mean_grams", "classifier_grams", "bias")},
)


def _tie_check(problem, sol, th):
  M = problem.depth
  rho = theory.deep_threshold_ratio(M)
  x = theory.deep_largest_root(rho, M)
  return {"tie": abs(float(theory.deep_class_objective(x, rho, M)) - 1.0),
          "root": rel_error(float(x) ** M, M - 1.0, "exact")}


DEEP_THRESHOLD_TIE = Claim(
    name="deep_threshold_tie",
    source="derived in ufm.theory.deep_threshold_ratio from " + _DANG + "'s per-class equation b/n_k = phi_M(x)",
    paper=_DANG,
    statement="At b/n_k = rho_M = (M-1)^((M-1)/M)/M the largest root of phi_M(x) = b/n_k is x_+ = (M-1)^(1/M) and "
              "G(x_+)/n_k = 1 = G(0)/n_k: the zero and the non-zero optimum tie (the global threshold).",
    problems=deep_specs(K=(2,), n=(1,), M=(1, 2, 3, 4, 5, 6, 8), regime="below"),
    theory=lambda problem: None, check=_tie_check, solver="none",
    tolerances={"tie": Tolerance(1e-12, "closed forms and a 200-step bisection in float64: rounding only"),
                "root": "exact"},
)


def _largest_root_check(problem, sol, th):
  lam_W, lam_H = np.asarray(problem.lam_W), float(problem.lam_H)
  ours = theory.deep_mse_minimiser(problem.counts, lam_W, lam_H, M=problem.depth, bias=problem.bias)
  dang = theory.deep_mse_minimiser(problem.counts, lam_W, lam_H, M=problem.depth, bias=problem.bias, rule="largest")
  f_ours, f_dang = _value_at(problem, ours.logits_M), _value_at(problem, dang.logits_M)
  return {"excess": max(f_dang - f_ours, 0.0) / abs(f_ours)}


_WINDOW_EXAMPLE = DeepSpec(counts=(2, 2), M=2, width=3, lam_W=0.1, lam_H=0.600625, loss="mse")  # b/n_k = 0.62

DEEP_LARGEST_ROOT_RULE = Claim(
    name="deep_largest_root_rule",
    source=_DANG + ", the authors' code (compute_x takes the largest root)",
    paper=_DANG,
    statement="Deep linear MSE-UFM: the per-class optimum is the largest root x_+ of b/n_k = phi_M(x) whenever one "
              "exists (zero only when none does).",
    problems=deep_specs(K=(2, 3), n=(1, 2), M=(2, 3), regime="straddle", ratio=(0.3, 1.0)),
    theory=lambda problem: None, check=_largest_root_check, solver="none",
    tolerances={"excess": "exact"},
    expected="refuted",
    refuted_because="for M >= 2 and rho_M <= b/n_k <= phi_M(x_*) (M = 2: 0.5 to 0.6495) the largest root is only a "
                    "local minimum; zero is lower (the threshold is rho_M, not the existence ratio). Counterexample: "
                    "M = 2, b/n_k = 0.62, the full objective at the two explicit points differs by 6% relative.",
    counterexamples=(_WINDOW_EXAMPLE,),
)


def _ce_specs(K, M, lam=(1e-5, 1e-3)):
  """Balanced deep CE problems (width K), lam_W = lam_H log-uniform on ``lam``; no solve (the values are 1-D
  minimisations evaluated on the full objective)."""
  @st.composite
  def draw(d):
    Kv, Mv, n = d(st.sampled_from(K)), d(st.sampled_from(M)), d(st.sampled_from((1, 2, 3)))
    lv = float(np.exp(d(st.floats(np.log(lam[0]), np.log(lam[1])))))
    return DeepSpec(counts=(n,) * Kv, M=Mv, width=Kv, lam_W=lv, lam_H=lv, loss="ce")
  return draw()


def _ce_pair(problem):
  K, n, M = problem.K, problem.counts[0], problem.depth
  lam_W, lam_H = float(np.asarray(problem.lam_W)[0]), float(problem.lam_H)
  etf, blk = theory.deep_ce_etf(K, n, M, lam_W, lam_H), theory.deep_ce_block(K, n, M, lam_W, lam_H)
  return _value_at(problem, etf.Zbar), _value_at(problem, blk.Zbar)


def _etf_global_check(problem, sol, th):
  f_etf, f_blk = _ce_pair(problem)
  return {"etf_excess": max(f_etf - f_blk, 0.0) / f_etf}


DEEP_CE_ETF_EVERY_DEPTH = Claim(
    name="deep_ce_etf_every_depth",
    source=_DANG + ", Thm. A.1",
    paper=_DANG,
    statement="Balanced bias-free deep linear CE-UFM, any depth M: the ETF (deep neural collapse) configuration is "
              "the global minimiser, so no configuration, in particular no block construction, is lower.",
    problems=_ce_specs(K=(2, 4, 6, 8), M=(1, 2, 3, 4)),
    theory=lambda problem: None, check=_etf_global_check, solver="none",
    tolerances={"etf_excess": "exact"},
    expected="refuted",
    refuted_because="Garrod & Keating 2024 (arXiv 2410.23169) Thm. 1: for K >= 4, M >= 3 (and K >= 6, M = 2) the "
                    "rank-K/2 block construction has a lower objective than every ETF configuration. Counterexample: "
                    "K = 4, M = 3, n = 2, lam = 1e-3 (both values on the full objective at explicit parameters).",
    counterexamples=(DeepSpec(counts=(2, 2, 2, 2), M=3, width=4, lam_W=1e-3, lam_H=1e-3, loss="ce"),),
)


def _block_check(problem, sol, th):
  f_etf, f_blk = _ce_pair(problem)
  return {"block_excess": max(f_blk - f_etf, 0.0) / f_etf}


DEEP_CE_BLOCK_BELOW_ETF = Claim(
    name="deep_ce_block_below_etf",
    source=_GK + ", Thm. 1",
    paper=_GK,
    statement="Balanced bias-free deep linear CE-UFM with K >= 4, M >= 3 or K >= 6, M = 2: the rank-K/2 block "
              "construction is strictly below the best ETF configuration, so the ETF is not the global minimiser.",
    problems=_ce_specs(K=(4, 6, 8), M=(2, 3, 4)).filter(lambda s: s.M >= 3 or s.K >= 6),
    theory=lambda problem: None, check=_block_check, solver="none",
    tolerances={"block_excess": "exact"},
    expected="holds-when",
    holds_when="weight decays lam_W = lam_H in [1e-5, 1e-3] (the theorem needs them small enough; the ratio "
               "F_blk/F_ETF tends to (K/2) 2^(2/(M+1))/(K-1) < 1 only as lam -> 0)",
)


def _depth_one_check(problem, sol, th):
  f_etf, f_blk = _ce_pair(problem)
  ref = float(theory.ce_balanced(problem.K, problem.counts[0], float(np.asarray(problem.lam_W)[0]),
                                 float(problem.lam_H)).objective)
  return {"block_below_etf": max(f_etf - f_blk, 0.0) / f_etf,
          "zhu_objective": rel_error(f_etf, ref, "brute_force_grid")}


DEEP_CE_DEPTH_ONE = Claim(
    name="deep_ce_depth_one_is_zhu",
    source=_GK + "; Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1",
    paper=_GK,
    statement="Balanced bias-free CE-UFM at depth M = 1: the best ETF configuration (a 1-D minimisation) has Zhu et "
              "al.'s global minimum (ufm.theory.ce_balanced), and the block construction is not below it.",
    problems=_ce_specs(K=(2, 4, 6, 8), M=(1,)),
    theory=lambda problem: None, check=_depth_one_check, solver="none",
    tolerances={"block_below_etf": "exact", "zhu_objective": "brute_force_grid"},
)


#: The deep linear UFM's claims.
CLAIMS = (DEEP_MSE_MINIMISER, DEEP_THRESHOLD_TIE, DEEP_LARGEST_ROOT_RULE, DEEP_CE_ETF_EVERY_DEPTH,
          DEEP_CE_BLOCK_BELOW_ETF, DEEP_CE_DEPTH_ONE)
