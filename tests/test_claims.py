"""Claims: strategies, the runner (a false claim caught and shrunk, a true one passing, stored counterexamples
replayed first), the catalogue (a smoke run here, >= 200 examples per claim with `pytest -m claims`), and the
``python -m ufm claims`` commands.

Compilation dominates (one per problem shape, ~3-5 s on 2 cores), so the tests that solve share a few shapes:
the norm claims below use K in {2, 3}, n in {1, 2}, d = K + 1 only.
"""

import dataclasses
import json
import math
import subprocess
import sys

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from ufm import cli, claims, testing, theory
from ufm.testing import ProblemSpec, problem_specs, rel_error

# ----------------------------------------------------------------------------- strategies (no solves)


@hypothesis.given(problem_specs(K=(2, 3, 5), n=(1, 3), d_offsets=(-1, 1), loss="ce", bias=(False, True),
                                lam_b=(1e-2, 1.0), regime="below"))
def test_problem_specs_draw_shapes_from_the_given_sets_below_the_threshold(spec):
  assert spec.K in (2, 3, 5) and set(spec.counts) <= {1, 3} and len(set(spec.counts)) == 1
  assert spec.d in (spec.K - 1, spec.K + 1) and spec.loss == "ce"
  assert (spec.lam_b == 0) if not spec.bias else (1e-2 <= spec.lam_b <= 1.0)
  # the collapse index of the strategy is ufm.theory's balanced threshold, kept below 1 - margin
  tau = float(theory.collapse_threshold(spec.K, spec.counts[0], spec.lam_W, spec.lam_H))
  assert math.isclose(tau, testing.collapse_index(spec.counts, spec.lam_W, spec.lam_H), rel_tol=1e-12)
  assert 0.05 * (1 - 1e-12) <= tau <= 0.9 * (1 + 1e-12)
  assert 0.1 * (1 - 1e-12) <= spec.lam_H / spec.lam_W <= 10 * (1 + 1e-12)
  assert 0 <= spec.seed < 2**32 and spec.problem().K == spec.K


@hypothesis.given(problem_specs(counts=("step", "long_tailed"), n=(1, 2, 5), loss="mse", bias=False,
                                regime="above"))
def test_imbalanced_counts_and_the_above_regime(spec):
  assert len(set(spec.counts)) > 1 and max(spec.counts) in (2, 5) and min(spec.counts) >= 1
  assert list(spec.counts) == sorted(spec.counts, reverse=True)
  assert testing.collapse_index(spec.counts, spec.lam_W, spec.lam_H) >= 1.1 * (1 - 1e-12)


@hypothesis.given(st.data())
def test_weight_decays_free_regime_and_explicit_counts(data):
  counts = data.draw(testing.class_counts(kind="explicit", explicit=[(3, 1), (2, 2, 1)]))
  assert counts in ((3, 1), (2, 2, 1))
  lam_W, lam_H = data.draw(testing.weight_decays(counts, regime="free", lam=(1e-3, 1e-1)))
  assert 1e-3 <= lam_W <= 1e-1 and 1e-3 <= lam_H <= 1e-1


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=2), "depth = 2 is not supported yet"),
    (dict(loss="hinge"), "loss = 'hinge' is not supported"),
    (dict(regime="near"), "regime = 'near' is not supported"),
    (dict(counts="explicit"), "kind 'explicit' needs explicit="),
    (dict(K=(1,)), "K = 1 is out of range"),
    (dict(margin=0.96), "tau = (0.05, 3.0) is out of range for margin 0.96"),
])
def test_strategy_options_are_checked_before_drawing(kwargs, message):
  with pytest.raises(ValueError) as e:
    problem_specs(**kwargs)
  assert message in str(e.value)


def test_problem_spec_json_round_trip_and_validation():
  spec = ProblemSpec(counts=(3, 1), d=2, lam_W=0.1234567890123, lam_H=2e-3, lam_b=0.5, loss="mse", bias=True,
                     seed=2**32 - 1, init_scale=0.3)
  assert ProblemSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
  for bad, message in [({**spec.to_json(), "lam_W": -1.0}, "lam_W = -1.0 is out of range"),
                       ({**spec.to_json(), "seed": -1}, "seed = -1 is out of range"),
                       ({**spec.to_json(), "pickle": 1}, "unknown fields ['pickle']"),
                       ({"counts": [2, 2]}, "missing ['d', 'lam_H', 'lam_W']"),
                       ([1, 2], "must be a JSON object")]:
    with pytest.raises(ValueError, match=None) as e:
      ProblemSpec.from_json(bad)
    assert message in str(e.value)


def test_rel_error_is_relative_above_the_floor_and_absolute_below():
  rtol, atol, _ = testing.TOL["reference"]
  assert rel_error(2.0 * (1 + 1e-9), 2.0) == pytest.approx(1e-9)
  assert rel_error(5e-10, 0.0) == pytest.approx(5e-10 * rtol / atol)  # |a - e| <= atol  <=>  r <= rtol
  assert rel_error(np.nan, 1.0) == math.inf and rel_error(np.eye(2), np.eye(2)) == 0.0
  assert testing.tolerance("reference") == testing.Tolerance(rtol, "TOL['reference']: " + testing.TOL["reference"][2])
  with pytest.raises(ValueError, match="shape"):
    rel_error(np.ones(2), np.ones(3))


def test_claim_declaration_is_validated():
  base = dict(name="x", source="s", statement="", problems=problem_specs(), check=lambda p, s, t: {},
              tolerances={"r": "reference"})
  for change, message in [(dict(name="bad name"), "claim name 'bad name' is not allowed"),
                          (dict(source=" "), "source is empty"),
                          (dict(tolerances={"r": "nope"}), "tolerance 'nope' of 'r' is not in ufm.testing.TOL"),
                          (dict(tolerances={"r": testing.Tolerance(1e-3, "")}), "Tolerance(bound > 0, reason)"),
                          (dict(tolerances={"grad_norm": "reference"}), "'grad_norm' is reserved"),
                          (dict(expected="refuted"), "say why in refuted_because"),
                          (dict(expected="holds-when"), "state it in holds_when"),
                          (dict(expected="maybe"), "expected = 'maybe'; allowed values: holds, refuted, holds-when"),
                          (dict(solver="adam"), "solver = 'adam'; allowed values: lbfgs, convex, none"),
                          (dict(counterexamples=[1]), "counterexamples must be a tuple of problem descriptions"),
                          (dict(inits=0), "inits = 0 is out of range")]:
    with pytest.raises(ValueError) as e:
      claims.Claim(**{**base, **change})
    assert message in str(e.value)
  with pytest.raises((ValueError, TypeError)):  # TypeError: jaxtyping's runtime check in the test suite comes first
    claims.Claim(**{**base, "problems": [1, 2]})


# ----------------------------------------------------------------------------- a false claim and a true one


def _norm_claim(wrong: bool, **kw) -> claims.Claim:
  r"""||w_k||^2 = t* of the balanced CE-UFM (Zhu et al. 2021 + ufm.theory.ce_balanced). The false version
  drops the factor K - 1 inside the logarithm, t = log((beta - K lam_W)/(K lam_W))/beta: a wrong constant that
  agrees with the truth exactly at K = 2, so its minimal counterexample has K = 3."""

  def theory_fn(p):
    K, n, lam_W, lam_H = p.K, p.n, float(p.lam_W), float(p.lam_H)
    if not wrong:
      return float(theory.ce_balanced(K, n, lam_W, lam_H).norm_w_sq)
    beta = K / (K - 1) * math.sqrt(lam_W / (n * lam_H))
    return max(0.0, math.log((beta - K * lam_W) / (K * lam_W)) / beta)

  fields = dict(
      name="wrong_ce_norm" if wrong else "ce_norm", source="a test of ufm.claims",
      statement="||W||^2 = K t* at the balanced CE minimiser",
      problems=problem_specs(K=(2, 3), n=(1, 2), d_offsets=(1,), loss="ce", bias=False, regime="below"),
      theory=theory_fn, check=lambda p, sol, t: {"norm_W_sq": rel_error(np.sum(sol.params.W**2), p.K * t)},
      tolerances={"norm_W_sq": "reference"}, gtol=1e-12)
  return claims.Claim(**{**fields, **kw})


def test_false_claim_is_caught_shrunk_stored_and_replayed_first(tmp_path):
  store = claims.ClaimStore(tmp_path / "store")
  false = _norm_claim(wrong=True)
  r = claims.run_claim(false, examples=20, seed=1, store=store)
  assert r.status == "FAILED" and not r.as_expected and 0 < r.failures < 20 and r.examples == 20
  ce = r.counterexample
  # minimal: the smallest K where the constants differ, the smallest n, and the seed shrunk to 0
  assert ce.K == 3 and ce.counts == (1, 1, 1) and ce.d == 4 and ce.seed == 0, ce
  assert r.counterexample_outcome.failing == ("norm_W_sq",) and r.shrunk and r.shrink_calls > 0
  assert r.worst[0] == "norm_W_sq" and r.worst[1] > 1e-2
  text = claims.format_result(r, false)
  assert "FAILED" in text and "counterexample (minimal: shrunk" in text and "counts=(1, 1, 1)" in text

  data = json.loads((tmp_path / "store" / "claims.json").read_text())  # plain JSON
  entry = data["claims"]["wrong_ce_norm"]
  assert entry["counterexamples"] == [ce.to_json()]
  assert entry["last_run"]["status"] == "FAILED" and entry["last_run"]["examples"] == 20

  # Replayed first: with one random example (the simplest, K = 2, where the false constant is right) the
  # stored counterexample still fails the claim, and it is the first problem the check sees.
  seen = []

  def recording_check(p, sol, t):
    seen.append((p.counts, float(p.lam_W)))
    return false.check(p, sol, t)

  again = claims.run_claim(dataclasses.replace(false, check=recording_check), examples=1, seed=1, store=store)
  assert again.replayed == 1 and again.examples == 1 and again.failures == 1 and again.status == "FAILED"
  assert seen[0] == (ce.counts, ce.lam_W) and seen[1][0] == (1, 1)
  assert again.counterexample == ce

  # a claim kept as a documented counterexample: failing is its expected status
  refuted = dataclasses.replace(false, expected="refuted", refuted_because="the factor K - 1 is dropped")
  res = claims.run_claim(refuted, examples=1, seed=1, store=store)
  assert res.status == "refuted" and res.as_expected
  table = claims.report_markdown([res], {refuted.name: refuted})
  assert "| `wrong_ce_norm` |" in table and "refuted (expected)" in table and "the factor K - 1 is dropped" in table


def test_true_claim_passes_on_200_examples():
  r = claims.run_claim(_norm_claim(wrong=False), examples=200, seed=2)
  assert r.status == "holds" and r.as_expected and r.examples == 200 and r.failures == 0
  assert r.counterexample is None and r.max_residuals["grad_norm"] <= 1e-12
  assert r.worst[0] == "norm_W_sq" and r.worst[1] <= testing.TOL["reference"][0]


def test_replay_from_a_hand_written_store_and_assert_claim(tmp_path):
  """The JSON replay needs no hypothesis database: a counterexample written by hand is replayed."""
  spec = ProblemSpec(counts=(2, 2, 2), d=4, lam_W=0.05, lam_H=0.02, loss="ce", seed=7)
  (tmp_path / "claims.json").write_text(json.dumps(
      {"version": 1, "claims": {"wrong_ce_norm": {"counterexamples": [spec.to_json()]}}}))
  store = claims.ClaimStore(tmp_path)
  r = claims.run_claim(_norm_claim(wrong=True), examples=1, store=store)
  assert r.replayed == 1 and r.failures == 1 and r.counterexample == spec
  with pytest.raises(AssertionError, match="counterexample"):
    claims.assert_claim(_norm_claim(wrong=True), examples=1, store=store)
  assert claims.assert_claim(_norm_claim(wrong=False), examples=3).status == "holds"
  (tmp_path / "claims.json").write_text("{not json")
  with pytest.raises(ValueError, match="is not readable JSON"):
    store.counterexamples("wrong_ce_norm")


def test_a_check_that_raises_is_a_failing_example():
  boom = _norm_claim(wrong=False, name="raises", check=lambda p, sol, t: 1 / 0)
  r = claims.run_claim(boom, examples=2, shrink=False)
  assert r.status == "FAILED" and r.worst[0] == "error"
  assert "ZeroDivisionError" in r.counterexample_outcome.error


def test_run_claim_refuses_bad_arguments_before_compiling():
  c = _norm_claim(wrong=False)
  with pytest.raises(ValueError, match="examples = 0 is out of range"):
    claims.run_claim(c, examples=0)
  with pytest.raises(ValueError, match="seed = -3 is out of range"):
    claims.run_claim(c, seed=-3)


# ----------------------------------------------------------------------------- the catalogue


def test_catalogue_covers_every_closed_form_of_ufm_theory():
  """Every closed form of ufm.theory (and the convex reference's SELI Grams) is the expected side of some claim in
  some family module; every tolerance is a TOL entry or a Tolerance with its reason."""
  import importlib
  import inspect
  from ufm.claims import catalogue
  cat = "".join(inspect.getsource(importlib.import_module(f"ufm.claims.{m}")) for m in catalogue.FAMILY_MODULES)
  for fn in ("ce_balanced", "collapse_threshold", "mse_minimiser", "orthogonal_frame", "etf_target",
             "vicinity_base_point", "vicinity_linearised_map", "contraction_map",
             "deep_mse_minimiser", "deep_threshold_ratio", "deep_largest_root", "deep_class_objective", "deep_ce_etf",
             "deep_ce_block", "mixup_optimal_feature", "mixup_same_class_scale", "regular_polygon", "cross_polytope",
             "simplex_etf", "regular_polygon_metrics", "cross_polytope_metrics", "simplex_metrics",
             "riesz_energy_regular_polygon", "riesz_energy_cross_polytope", "riesz_energy_simplex",
             "spherical_ce_collapsed", "etf_gram"):
    assert f"theory.{fn}(" in cat, fn
  for fn in ("convex.ce_convex(", "convex.seli_grams(", "convex.minority_stats(", "mixup.mse_mixup_features(",
             "geometry.fixed_classifier("):
    assert fn in cat, fn
  assert sum(c.theory is theory.predict for c in claims.CATALOGUE.values()) >= 4  # predict, with its metrics
  assert set(catalogue.by_family()) == set(catalogue.FAMILY_MODULES) and all(catalogue.by_family().values())
  for c in claims.CATALOGUE.values():
    assert c.source and c.statement and c.expected in claims.EXPECTED
    assert all(t in testing.TOL for t in c.tolerances.values() if isinstance(t, str))
    if c.expected == "refuted":
      assert c.counterexamples, f"{c.name}: a refuted claim commits its minimal counterexample"


def _smoke_params():
  """The plain and vicinity claims and every claim without a solve run in the default suite; the other families'
  solving claims (3-15 s of compilation each) under `-m slow`."""
  from ufm.claims import catalogue
  fam = catalogue.FAMILY_OF
  return [pytest.param(n, marks=() if fam[n] in ("plain", "vicinity") or c.solver == "none" else pytest.mark.slow)
          for n, c in claims.CATALOGUE.items()]


@pytest.mark.parametrize("name", _smoke_params())
def test_catalogue_smoke_run(name):
  """Every catalogue claim on a few examples of its first (smallest) shape (and its committed counterexamples);
  the refuted plain one needs more draws to meet its counterexample (cheap: same shape). The full run is
  `pytest -m claims` (>= 200 examples each). One test per claim, so that the workers share them."""
  c = claims.CATALOGUE[name]
  r = claims.run_claim(c, examples=12 if c.expected == "refuted" and not c.counterexamples else 2, seed=0,
                       max_shapes=1)
  assert r.as_expected, claims.format_result(r, c)


@pytest.mark.slow
@pytest.mark.claims
@pytest.mark.parametrize("name", list(claims.CATALOGUE))
def test_catalogue_full(name):
  """>= 200 examples per claim. With UFM_COMPILATION_CACHE naming a directory (the suite turns the cache off by
  default) the compiled programs of an earlier run, e.g. of `python -m ufm claims run --all`, are reused."""
  from ufm import cache
  cache.enable()
  c = claims.CATALOGUE[name]
  r = claims.run_claim(c, examples=claims.DEFAULT_EXAMPLES, seed=0)
  print(claims.format_result(r, c))
  # >= 200, unless the claim's domain has fewer distinct problems (relu_dnc_multiclass: one problem, 4 seeds)
  small = {"relu_dnc_multiclass": 4}
  assert r.examples >= small.get(name, 200) and r.as_expected, claims.format_result(r, c)


# ----------------------------------------------------------------------------- the command line

USER_CLAIM = '''
import numpy as np
from ufm import claims, testing

feature_ratio = claims.Claim(
    name="ce_feature_ratio", source="Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1",
    statement="||h_k|| / ||w_k|| = sqrt(lam_W / (n lam_H)) at the balanced CE minimiser",
    problems=testing.problem_specs(K=(2, 3), n=(1, 2), d_offsets=(1,), loss="ce", bias=False, regime="below"),
    check=lambda p, sol, th: {"ratio": testing.rel_error(
        np.linalg.norm(sol.params.H[:, 0]) / np.linalg.norm(sol.params.W[0]),
        np.sqrt(p.lam_W / (p.n * p.lam_H)))},
    tolerances={"ratio": "reference"}, gtol=1e-12)
'''


def test_cli_check_runs_a_users_own_claim_and_run_writes_the_report(tmp_path, capsys, monkeypatch):
  (tmp_path / "my_claims.py").write_text(USER_CLAIM)
  monkeypatch.chdir(tmp_path)
  store = str(tmp_path / "s")
  assert cli.main(["claims", "check", "my_claims:feature_ratio", "--examples", "3", "--store", store]) == 0
  out = capsys.readouterr().out
  assert "ce_feature_ratio: holds" in out and "1 claim(s): 1 as expected" in out
  assert cli.main(["claims", "check", str(tmp_path / "my_claims.py") + ":feature_ratio", "--examples", "1",
                   "--store", store]) == 0
  capsys.readouterr()

  report = tmp_path / "claims.md"
  assert cli.main(["claims", "run", "ce_norms", "--examples", "2", "--store", store, "--report", str(report)]) == 0
  out = capsys.readouterr().out
  assert "ce_norms: holds" in out and "largest residual/tolerance: norm_" in out
  md = report.read_text()
  assert md.startswith("| claim | source | examples | max residual / tolerance | status |")
  assert "| `ce_norms` | Zhu et al. 2021" in md and "| holds |" in md and "--examples 2" in md

  assert cli.main(["claims", "list", "--store", store]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1 + len(claims.CATALOGUE)
  assert any(l.startswith("ce_norms") and "holds (2 examples, 0 failing" in l for l in lines)
  assert any(l.startswith("ce_etf_geometry") and "never run" in l for l in lines)


@pytest.mark.parametrize("argv, message", [
    (["run", "no_such_claim"], "unknown claim 'no_such_claim'; known claims: ce_etf_geometry"),
    (["run", "ce_norms", "--examples", "0"], "examples = 0 is out of range"),
    (["run", "ce_norms", "--examples", "-5"], "examples = -5 is out of range"),
    (["run", "ce_norms", "--seed", "-1"], "seed = -1 is out of range"),
    (["run", "ce_norms", "--all"], "give claim names or --all, not both"),
    (["run", "ce_norms", "--max-shapes", "-1"], "max_shapes = -1 is out of range"),
    (["check", "no_colon"], "'no_colon' is not of the form module:attr"),
    (["check", "no_such_module_xyz:c"], "cannot import 'no_such_module_xyz': ModuleNotFoundError"),
    (["check", "ufm.theory:nothing"], "module 'ufm.theory' has no attribute 'nothing'"),
    (["check", "ufm.theory:predict"], "ufm.theory:predict is a function, not a ufm.claims.Claim"),
    (["check", "missing_file.py:c"], "file 'missing_file.py' does not exist"),
])
def test_claims_bad_input_is_one_line_and_exit_2(argv, message, capsys, monkeypatch):
  def no_solve(*a, **k):
    raise AssertionError("solved before rejecting bad input")
  monkeypatch.setattr(claims.core, "_solve", no_solve)
  assert cli.main(["claims", *argv]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and message in err and err.startswith("ufm: error:"), err


def test_claims_bad_input_in_a_real_process_has_no_traceback(tmp_path):
  (tmp_path / "claims.json").write_text(json.dumps({"version": 1, "claims": {"ce_norms": {"counterexamples": [
      {"counts": [2, 2], "d": 3, "lam_W": -1.0, "lam_H": 0.1}]}}}))
  for argv, message in [(["run", "nope"], "unknown claim 'nope'"),
                        (["run", "ce_norms", "--store", str(tmp_path)], "counterexample 0 of 'ce_norms' is invalid")]:
    r = subprocess.run([sys.executable, "-m", "ufm", "claims", *argv], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
