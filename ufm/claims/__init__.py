r"""Theory claims as executable checks, and the catalogue of the closed forms ``ufm`` implements.

A claim is a small declared object (:class:`Claim`): a name, its source, the problems it applies
to (a hypothesis strategy from :mod:`ufm.testing`), and a check
``(problem, solution, theory) -> residuals`` with a tolerance and its reason per residual.
:func:`run_claim` checks it on the stored counterexamples first, then on random problems with the
float64 reference solver (vmapped over the problems of one shape), shrinks a failure to a minimal
counterexample and stores it (:class:`ClaimStore`, plain JSON). :data:`CATALOGUE` registers every
closed form of :mod:`ufm.theory`. From the shell::

  python -m ufm claims list
  python -m ufm claims run [NAME ...] [--examples N] [--seed S] [--report claims.md]
  python -m ufm claims check my_module:my_claim

A claim of one's own, in ten lines (Zhu et al. 2021: features are a fixed multiple of their classifier)::

  import numpy as np
  from ufm import claims, testing

  feature_ratio = claims.Claim(
      name="ce_feature_ratio", source="Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1",
      statement="||h_k|| / ||w_k|| = sqrt(lam_W / (n lam_H)) at the balanced CE minimiser",
      problems=testing.problem_specs(loss="ce", bias=False, regime="below"),
      check=lambda p, sol, th: {"ratio": testing.rel_error(
          np.linalg.norm(sol.params.H[:, 0]) / np.linalg.norm(sol.params.W[0]),
          np.sqrt(p.lam_W / (p.n * p.lam_H)))},
      tolerances={"ratio": "reference"})

and in a test file: ``def test_ratio(): claims.assert_claim(feature_ratio, examples=100)``.
"""

from ufm.claims.catalogue import CATALOGUE, get_claim
from ufm.claims.core import (DEFAULT_EXAMPLES, DEFAULT_MAX_SHAPES, EXPECTED, SOLVERS, Claim, ClaimResult, Outcome,
                             assert_claim, draw_examples, format_result, format_worst, report_markdown, result_record,
                             run_claim)
from ufm.claims.user import load_claim
from ufm.claims.store import DEFAULT_STORE_DIR, ClaimStore

__all__ = [
    "CATALOGUE",
    "DEFAULT_EXAMPLES",
    "DEFAULT_MAX_SHAPES",
    "DEFAULT_STORE_DIR",
    "EXPECTED",
    "Claim",
    "ClaimResult",
    "ClaimStore",
    "SOLVERS",
    "Outcome",
    "assert_claim",
    "draw_examples",
    "format_result",
    "format_worst",
    "get_claim",
    "load_claim",
    "report_markdown",
    "result_record",
    "run_claim",
]
