r"""Fixed classifiers' claims.

From :mod:`ufm.geometry` (derivations §5.7): the defining property of each construction, and the features a
spherical CE-UFM learns against it (:func:`ufm.spherical.make_spherical_problem` with ``W_fixed``; float64 L-BFGS on
the scale-invariant form).

* ``fixed_classifier_constructions`` (holds): the simplex ETF and the d-Simplex of Pernici et al. 2021 (arXiv
  2103.15632) have unit rows with pairwise cosine :math:`-1/(K-1)`; the d-Orthoplex has unit rows :math:`\pm e_i`
  (cosines -1 and 0); no solve.
* ``fixed_classifier_alignment`` (holds-when): with a fixed classifier, the learned features collapse onto their
  classifier rows (:math:`h_i = w_{y_i}`, every sample correct), and the objective is the collapsed value, for the
  symmetric codes (ETF, d-Simplex, d-Orthoplex), where every :math:`w_k` is the feature direction with the largest
  margin for class ``k``. The landscape is not benign: for a small temperature the antipode :math:`-w_k` is a local
  minimum of sample ``i``'s loss (``K = 3``, ``d = 2``, d-Simplex, :math:`\tau = 0.368`: the loss rises by
  :math:`7\cdot10^{-5}` at 0.01 rad from it in both directions, and lies 4.75 above the optimum), and one start of
  the 200-example run ended there (cos = -1 for two samples, :math:`|\nabla f| = 2\cdot10^{-11}`). Since the
  objective is a mean of per-sample terms, each a function of its own feature, the check takes every feature from
  the best of 8 starts for its sample (the global minimiser of a separable problem).
* ``fixed_classifier_alignment_any_code`` (refuted): the same for any fixed classifier, here the near-orthogonal
  equiangular basis vectors (EBV) of Shen, Sun & Wei 2023 (arXiv 2303.11637). Found while building this catalogue:
  for unit classifier rows the optimal unit feature of class ``k`` is
  :math:`h \propto a\,w_k - b\sum_{j\ne k} w_j` with :math:`b > 0` (moving along :math:`-w_j` lowers every
  competing logit to first order and costs the own logit only to second order), which is the direction of
  :math:`w_k` only when :math:`\sum_j w_j` is parallel to it, e.g. :math:`\sum_j w_j = 0` (the simplex ETF, the
  d-Orthoplex). For EBV (nearly orthogonal rows, :math:`\sum_j w_j \ne 0`) the learned features sit at cosine
  0.86 from their classifier (``K = 4``, ``d = 8``, ``tau = 0.5``).

The defining properties of EBV (:math:`|\cos| \le \alpha`) and of FedLoGe's sparse ETF (Xiao et al. 2024, arXiv
2401.08977: the sparsity pattern, unit rows) are outputs of iterative generators, not closed forms, so they are checked
in ``tests/test_geometry.py`` rather than registered here; the sparse ETF's alignment is not a claim because the
generator's output depends on its key and step count (no statement about it is published as a theorem).
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from ufm import geometry, theory
from ufm.claims.core import Claim
from ufm.claims.sphere import normalised
from ufm.testing import SphereSpec, rel_error, sphere_specs

__all__ = ["CLAIMS"]

_PERNICI = "Pernici et al. 2021 (arXiv 2103.15632)"


def _construction_check(problem, sol, th):
  K, d = problem.K, problem.d
  out = {}
  if d >= K - 1:
    for name in ("etf", "d_simplex"):
      W = np.asarray(geometry.fixed_classifier(name, K, d), np.float64)
      out[f"{name}_gram"] = rel_error(W @ W.T, np.asarray(theory.etf_gram(K)), "closed_form_metric")
  if K == 2 * d:
    W = np.asarray(geometry.fixed_classifier("orthoplex", K, d), np.float64)
    out["orthoplex_gram"] = rel_error(W @ W.T, np.kron(np.eye(d), [[1.0, -1.0], [-1.0, 1.0]]), "closed_form_metric")
  return out


FIXED_CONSTRUCTIONS = Claim(
    name="fixed_classifier_constructions",
    source=_PERNICI + " (d-Simplex, d-Orthoplex); the simplex ETF of Papyan, Han & Donoho 2020 (arXiv 2008.08186)",
    paper=_PERNICI,
    statement="The simplex ETF and the d-Simplex (any d >= K - 1) have Gram I - (11^T - I)/(K - 1) (unit rows, "
              "cosines -1/(K-1)); the d-Orthoplex (K = 2d) has rows +-e_i, Gram blockdiag([[1, -1], [-1, 1]]).",
    problems=st.one_of(sphere_specs(K=(3, 4, 5, 7), n=(1,), d=(4, 6, 9)).filter(lambda s: s.d >= s.K - 1),
                       sphere_specs(K=(4, 6, 8, 10), n=(1,), d_of_K=lambda K: K // 2)),
    theory=lambda problem: None, check=_construction_check, solver="none",
    tolerances={k: "closed_form_metric" for k in ("etf_gram", "d_simplex_gram", "orthoplex_gram")},
)


_STARTS = 8  # per-sample failure to reach the good basin: about 0.17 per start (K = 3, tau = 0.37), 0.17^8 ~ 1e-6


def _best_per_sample(problem, sol):
  """``(W, H, f)``: with a fixed classifier the objective is a mean of per-sample terms, each a function of its own
  feature only, so the global minimiser takes every column of ``H`` from the start where that sample's loss is
  lowest (``sol`` carries a leading axis of starts); ``f`` is the mean of those losses."""
  Hs, losses = [], []
  for j in range(np.shape(sol.objective)[0]):
    W, H = normalised(problem, jax.tree.map(lambda x, j=j: x[j], sol))
    Z = W @ H / float(problem.tau)
    Y = np.asarray(problem.Y, np.float64)
    m = Z.max(axis=0)
    losses.append(m + np.log(np.exp(Z - m).sum(axis=0)) - (Y * Z).sum(axis=0))
    Hs.append(H)
  best = np.argmin(np.stack(losses), axis=0)
  H = np.stack(Hs)[best, :, np.arange(best.size)].T
  return W, H, float(np.mean(np.min(np.stack(losses), axis=0)))


def _alignment_check(problem, sol, th):
  W, H, f = _best_per_sample(problem, sol)
  al = geometry.classifier_alignment(jnp.asarray(W), jnp.asarray(H), problem.labels, problem.K)
  G = W @ W.T
  return {"sample_cos": 1.0 - float(al["sample_cos_min"]), "accuracy": 1.0 - float(al["accuracy"]),
          "objective": rel_error(f, float(theory.spherical_ce_collapsed(jnp.asarray(G), float(problem.tau))))}


FIXED_ALIGNMENT = Claim(
    name="fixed_classifier_alignment",
    source=_PERNICI + "; features of a fixed-classifier spherical CE-UFM (derivations §5.7)",
    paper=_PERNICI,
    statement="Balanced spherical CE-UFM with a fixed classifier: every learned feature equals its class's "
              "classifier row (cos = 1, all samples correct) and f* is the collapsed value.",
    problems=st.one_of(sphere_specs(K=(3, 4, 5), n=(1, 2), d_of_K=lambda K: K - 1, classifier=("etf", "d_simplex")),
                       sphere_specs(K=(6, 8), n=(1, 2), d_of_K=lambda K: K // 2, classifier="orthoplex")),
    theory=lambda problem: None, check=_alignment_check, inits=_STARTS,
    tolerances={"sample_cos": "reference_metric", "accuracy": "exact", "objective": "reference"},
    expected="holds-when",
    holds_when="the fixed classifier is a symmetric code (simplex ETF, d-Simplex, d-Orthoplex: every w_k is the "
               "feature direction with the largest margin for class k)",
)

FIXED_ALIGNMENT_ANY_CODE = Claim(
    name="fixed_classifier_alignment_any_code",
    source="fixed_classifier_alignment read for any fixed classifier, here the EBV of Shen, Sun & Wei 2023 "
           "(arXiv 2303.11637)",
    paper="Shen, Sun & Wei 2023",
    statement="Balanced spherical CE-UFM with a fixed equiangular-basis-vector classifier (K <= d, |cos| <= 0.1): "
              "every learned feature equals its class's classifier row and f* is the collapsed value.",
    problems=sphere_specs(K=(3, 4), n=(1, 2), d=(6, 8), tau=(0.3, 1.0), classifier="ebv"),
    theory=lambda problem: None, check=_alignment_check, inits=_STARTS,
    tolerances={"sample_cos": "reference_metric", "accuracy": "exact", "objective": "reference"},
    expected="refuted",
    refuted_because="the optimal unit feature of class k is along a w_k - b sum_{j != k} w_j with b > 0, which is "
                    "w_k's direction only when sum_j w_j is parallel to w_k (e.g. 0: ETF, orthoplex). For EBV rows "
                    "(nearly orthogonal) the features sit at cosine 0.86 from their classifier (K = 4, d = 8, "
                    "tau = 0.5) and f* is 24% below the collapsed value.",
    counterexamples=(SphereSpec(counts=(1, 1, 1, 1), d=8, tau=0.5, classifier="ebv"),),
)

#: The fixed classifiers' claims.
CLAIMS = (FIXED_CONSTRUCTIONS, FIXED_ALIGNMENT, FIXED_ALIGNMENT_ANY_CODE)
