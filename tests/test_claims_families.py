"""Claims of every family: the spec types and strategies of ufm.testing (no solves), the committed counterexamples
of the refuted claims (each reproduces), the generated scorecard (the README table is the committed JSON's), a
user's own claim about each family, and the catalogue's family modules.

The solving claims of the deep, mixup, imbalanced, spherical and fixed-classifier families run under
``-m slow`` (tests/test_claims.py::test_catalogue_smoke_run) and ``-m claims`` (>= 200 examples each)."""

import json
import math
from pathlib import Path

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from ufm import claims, testing, theory
from ufm.claims import catalogue, scorecard
from ufm.testing import DeepSpec, MixupSpec, ProblemSpec, SphereSpec

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- strategies and spec types (no solves)


@hypothesis.settings(max_examples=10)
@hypothesis.given(testing.deep_specs(K=(2, 3), n=(1, 2), M=(1, 2, 3), bias=(False, True), regime="below"))
def test_deep_specs_keep_every_class_below_the_threshold_with_a_margin(spec):
  rho = theory.deep_threshold_ratio(spec.M)
  b = float(theory.deep_b(spec.N, spec.M, spec.lam_W, spec.lam_H))
  assert spec.M in (1, 2, 3) and spec.width == spec.K + 1 and spec.loss == "mse"
  assert all(b / n <= 0.9 * rho * (1 + 1e-9) for n in spec.counts)  # every class alive, 10% from rho_M
  p = spec.problem()
  assert p.depth == spec.M and p.widths == (spec.K + 1,) * spec.M and p.counts == spec.counts


@hypothesis.given(testing.deep_specs(K=(2,), n=(1, 3), counts="balanced", M=(2,), regime="above"))
def test_deep_specs_above_the_threshold(spec):
  b = float(theory.deep_b(spec.N, spec.M, spec.lam_W, spec.lam_H))
  assert b / spec.counts[0] >= 1.1 * theory.deep_threshold_ratio(2) * (1 - 1e-9)


@hypothesis.settings(max_examples=5)  # each draw builds its problem (an ETF embedding per K, d)
@hypothesis.given(testing.mixup_specs(K=(3, 4), loss=("ce", "mse")))
def test_mixup_specs_draw_fixed_etf_problems_on_the_uniform_grid(spec):
  assert spec.d >= spec.K - 1 and 0.1 <= spec.lam_H <= 1.0 and 0.5 <= spec.rho <= 2.0
  p = spec.problem()
  assert p.fixed_W and p.K == spec.K and p.num_lam == len(testing.MIXUP_GRID)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(p.W0), axis=1), spec.rho, rtol=1e-12)


@hypothesis.given(st.one_of(testing.sphere_specs(K=(3, 5), d=(2,), tau=(0.3, 1.0)),
                            testing.sphere_specs(K=(4, 6), d_of_K=lambda K: K // 2, classifier="orthoplex")))
def test_sphere_specs_learned_and_fixed(spec):
  p = spec.problem()
  assert not p.constrained and p.K == spec.K and p.d == spec.d
  if spec.classifier:
    assert spec.K == 2 * spec.d and p.fixed
  else:
    assert spec.d == 2 and not p.fixed and 0.3 <= spec.tau <= 1.0


@pytest.mark.parametrize("spec", [
    ProblemSpec(counts=(3, 1), d=2, lam_W=0.1, lam_H=2e-3, lam_b=0.5, loss="mse", bias=True, seed=5),
    DeepSpec(counts=(2, 1), M=3, width=3, lam_W=0.01, lam_H=0.123456789, bias=True, seed=2**32 - 1),
    MixupSpec(K=4, d=5, lam_H=0.3, rho=1.5, loss="mse", seed=3),
    SphereSpec(counts=(1, 1, 1, 1, 1, 1), d=3, tau=0.4, classifier="orthoplex", seed=9),
])
def test_every_spec_type_round_trips_through_json(spec):
  obj = json.loads(json.dumps(spec.to_json()))
  assert testing.spec_from_json(obj) == spec and testing.is_spec(spec)
  assert ("family" in obj) == (type(spec) is not ProblemSpec)  # the plain layout is unchanged


def test_relu_and_regression_specs_replay_as_their_own_family(tmp_path):
  """Stored through a ClaimStore (plain JSON), a ReLU DUFM spec comes back with its depth and a regression spec as a
  regression problem, not as plain UFM problems; specs of two depths are different keys."""
  from ufm.claims import regression as regression_claims
  from ufm.claims import relu as relu_claims
  store = claims.ClaimStore(tmp_path / "s")
  deep = relu_claims.relu_spec_class(4)(counts=(2,) * 6, d=6, lam_W=1e-3, lam_H=1e-3, loss="mse", seed=3,
                                        init_scale=0.3)
  reg = regression_claims.RegressionSpec(counts=(2, 8), d=3, lam_W=0.01, lam_H=0.02, loss="mse", bias=True, seed=1)
  store.add_counterexample("a", deep)
  store.add_counterexample("b", reg)
  (got_deep,), (got_reg,) = store.counterexamples("a"), store.counterexamples("b")
  assert got_deep == deep and got_deep.DEPTH == 4 and got_deep.problem().depth == 4
  assert got_reg == reg and type(got_reg.problem()).__name__ == "RegressionProblem"
  shallower = relu_claims.relu_spec_class(3)(*deep)
  assert shallower != deep and len({shallower, deep}) == 2
  with pytest.raises(ValueError, match="depth = 0 is out of range"):
    testing.spec_from_json({**deep.to_json(), "depth": 0})


@pytest.mark.parametrize("obj, message", [
    ({"family": "quantum", "K": 2}, "family = 'quantum' is not supported; allowed values: plain, deep"),
    ({"family": "deep", "counts": [2, 2], "M": 2, "width": 3, "lam_W": 0.1}, "missing ['lam_H']"),
    ({"family": "deep", "counts": [2, 2], "M": 0, "width": 3, "lam_W": 0.1, "lam_H": 0.1}, "M = 0 is out of range"),
    ({"family": "input_mixup", "K": 3, "d": 1, "lam_H": 0.1}, "d"),
    ({"family": "spherical", "counts": [1, 1, 1], "d": 2, "tau": -1.0}, "tau"),
    ({"family": "spherical", "counts": [1, 1], "d": 2, "tau": 1.0, "pickle": 1}, "unknown fields ['pickle']"),
    ({"family": "input_mixup", "K": 3, "d": 3, "lam_H": 0.1, "seed": -1}, "seed = -1 is out of range"),
])
def test_bad_stored_specs_are_refused_before_any_solve(obj, message):
  with pytest.raises(ValueError, match=None) as e:
    testing.spec_from_json(obj)
  assert message in str(e.value)


def test_strategy_options_of_the_families_are_checked():
  with pytest.raises(ValueError, match="regime = 'free' is not supported"):
    testing.deep_specs(regime="free")
  with pytest.raises(ValueError, match="give exactly one of d"):
    testing.sphere_specs()
  with pytest.raises(ValueError, match="classifier = 'round' is not supported"):
    testing.sphere_specs(d=(2,), classifier="round")
  with pytest.raises(ValueError, match="is not a spec type"):
    testing.register_spec_type(int)


# ----------------------------------------------------------------------------- the catalogue's families


def test_every_family_module_has_claims_and_names_are_unique():
  fams = catalogue.by_family()
  assert list(fams) == list(catalogue.FAMILY_MODULES)
  assert {"plain", "vicinity", "deep", "mixup", "imbalanced", "sphere", "fixed"} <= set(fams)
  assert sum(map(len, fams.values())) == len(claims.CATALOGUE)
  expected = {c.expected for c in claims.CATALOGUE.values()}
  assert expected == {"holds", "refuted", "holds-when"}
  for c in claims.CATALOGUE.values():
    if c.expected == "holds-when":
      assert c.holds_when.strip()
    assert "arXiv" in c.source or c.source.startswith("derived") or "derived" in c.source, c.name


_REFUTED_CONVEX = [n for n, c in claims.CATALOGUE.items() if c.expected == "refuted" and c.solver == "convex"]


@pytest.mark.parametrize("name", _REFUTED_CONVEX)
def test_committed_counterexamples_of_refuted_claims_reproduce(name):
  """Each refuted claim's committed minimal counterexample fails its check (status 'refuted', not 'NOT
  REPRODUCED'): the convex ones here, the others in tests/test_claims.py::test_catalogue_smoke_run (which replays
  them too; the L-BFGS ones of the new families under -m slow)."""
  c = claims.CATALOGUE[name]
  r = claims.run_claim(c, examples=1, seed=0, max_shapes=1)
  assert r.status == "refuted" and r.replayed == len(c.counterexamples) >= 1, claims.format_result(r, c)
  assert r.counterexample in c.counterexamples and not r.shrunk


def test_a_stale_committed_counterexample_is_reported_not_reproduced():
  """A refuted claim whose committed counterexample passes its check is NOT REPRODUCED, even when a random example
  fails: the documented refutation is then stale."""
  import dataclasses
  c = claims.CATALOGUE["deep_largest_root_rule"]
  outside = DeepSpec(counts=(2, 2), M=2, width=3, lam_W=0.1, lam_H=0.1, loss="mse")  # b/n_k far below rho_2
  r = claims.run_claim(dataclasses.replace(c, counterexamples=(outside,)), examples=1, seed=0)
  assert r.status == "NOT REPRODUCED" and not r.as_expected


# ----------------------------------------------------------------------------- the scorecard


def test_readme_scorecard_is_the_committed_json_rendered():
  """README.md between the scorecard markers is exactly what the committed ufm/claims/scorecard.json renders, and
  that JSON records every catalogue claim with its expected status observed."""
  data = scorecard.load()
  table = scorecard.readme_table(REPO / "README.md")
  assert table is not None, "README.md has no scorecard markers"
  assert table == scorecard.render(data), "README scorecard and ufm/claims/scorecard.json disagree: run " \
                                          "`python -m ufm claims run --all --report`"
  missing = set(claims.CATALOGUE) - set(data["claims"])
  assert not missing, f"claims without a scorecard record: {sorted(missing)}"
  for name, rec in data["claims"].items():
    assert rec["status"] == rec["expected"] == claims.CATALOGUE[name].expected, (name, rec["status"])


def test_report_merges_into_the_scorecard_and_rewrites_only_between_the_markers(tmp_path, capsys):
  from ufm import cli
  readme = tmp_path / "README.md"
  readme.write_text(f"# title\n\nbefore\n\n{scorecard.BEGIN}\nold table\n{scorecard.END}\n\nafter\n")
  card = tmp_path / "scorecard.json"
  card.write_text(json.dumps({"version": 1, "claims": {"kept": {
      "paper": "Someone 2020", "status": "holds", "expected": "holds", "examples": 3, "replayed": 0,
      "worst_residual": "x", "worst_value": 1e-12, "worst_bound": 1e-8, "note": ""}}, "runs": []}))
  argv = ["claims", "run", "deep_threshold_tie", "--examples", "2", "--store", str(tmp_path / "s"),
          "--report", str(readme), "--scorecard", str(card)]
  assert cli.main(argv) == 0
  assert "between its markers" in capsys.readouterr().out
  data = json.loads(card.read_text())
  assert set(data["claims"]) == {"kept", "deep_threshold_tie"}  # merged: the claim not run keeps its record
  rec = data["claims"]["deep_threshold_tie"]
  assert rec["status"] == "holds" and rec["family"] == "deep" and rec["paper"] == "Dang et al. 2023"
  text = readme.read_text()
  assert text.startswith("# title\n\nbefore\n\n") and text.endswith(f"{scorecard.END}\n\nafter\n")
  assert "old table" not in text and scorecard.readme_table(readme) == scorecard.render(data)
  assert "**Dang et al. 2023**" in text and "| `deep_threshold_tie` | 2 in 2 shapes |" in text
  assert "Generated by `python -m ufm claims run deep_threshold_tie --examples 2 --seed 0 --report`" in text


def test_report_refuses_a_bad_scorecard_before_running(tmp_path, capsys):
  from ufm import cli
  readme = tmp_path / "README.md"
  readme.write_text(f"{scorecard.BEGIN}\n{scorecard.END}\n")
  card = tmp_path / "scorecard.json"
  card.write_text("{not json")
  assert cli.main(["claims", "run", "deep_threshold_tie", "--report", str(readme), "--scorecard", str(card)]) == 2
  assert "is not readable JSON" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a user's own claim, every family


def _user_claim(**kw) -> claims.Claim:
  return claims.Claim(name="users_claim", source="a test of ufm.claims", statement="a user's statement", **kw)


def test_users_own_deep_claim_without_a_solve():
  """Dang et al.'s threshold: with every class below rho_M every class is alive (ufm.theory), no solve."""
  c = _user_claim(problems=testing.deep_specs(K=(2, 3), M=(2, 3), regime="below"), solver="none",
                  check=lambda p, sol, th: {"dead": float(np.sum(~np.asarray(th.alive[:p.K])))},
                  theory=lambda p: theory.deep_mse_minimiser(p.counts, np.asarray(p.lam_W), float(p.lam_H),
                                                            M=p.depth, bias=p.bias),
                  tolerances={"dead": testing.Tolerance(0.5, "a count of dead classes: 0 allowed")})
  assert claims.assert_claim(c, examples=10).status == "holds"


@pytest.mark.slow
def test_users_own_deep_claim_with_a_solve():
  """The best of 2 L-BFGS starts on the deep linear UFM has objective <= the zero point's (a user's bound)."""
  c = _user_claim(problems=testing.deep_specs(K=(2,), n=(1,), M=(2,), ratio=(0.05, 0.1)), inits=2, gtol=1e-9,
                  check=lambda p, sol, th: {"above_zero": max(float(np.min(sol.objective)) - 0.5, 0.0)},
                  theory=lambda p: None, tolerances={"above_zero": "exact"})
  assert claims.assert_claim(c, examples=2).status == "holds"


@pytest.mark.slow
def test_users_own_mixup_claim():
  """Mixed features have a finite norm below rho times the same-class scale (a user's bound), on L-BFGS solves."""
  c = _user_claim(problems=testing.mixup_specs(K=(3,), d_offsets=(-1,)), gtol=1e-10,
                  check=lambda p, sol, th: {"finite": 0.0 if np.all(np.isfinite(sol.params.H)) else math.inf},
                  theory=lambda p: None, tolerances={"finite": "exact"})
  assert claims.assert_claim(c, examples=2).status == "holds"


@pytest.mark.slow
def test_users_own_spherical_claim():
  """K = d + 1 on the sphere: the objective is at most log K (the value at H = 0 directions averaged)."""
  c = _user_claim(problems=testing.sphere_specs(K=(3,), n=(1,), d_of_K=lambda K: K - 1),
                  check=lambda p, sol, th: {"above_logK": max(float(sol.objective) - math.log(p.K), 0.0)},
                  theory=lambda p: None, tolerances={"above_logK": "exact"})
  assert claims.assert_claim(c, examples=2).status == "holds"


@pytest.mark.slow
def test_users_own_imbalanced_claim_with_the_convex_solver():
  """The convex reference's rank is at most K - 1 with a free bias (the logits are centred)."""
  c = _user_claim(problems=testing.problem_specs(counts="explicit", explicit_counts=((5, 2, 1),), loss="ce",
                                                 bias=True, d_offsets=(0,), regime="free", lam=(1e-3, 1e-2)),
                  solver="convex", check=lambda p, sol, th: {"rank_excess": max(int(sol.rank) - (p.K - 1), 0)},
                  theory=lambda p: None, tolerances={"rank_excess": testing.Tolerance(0.5, "an integer: 0 allowed")})
  assert claims.assert_claim(c, examples=2).status == "holds"


def test_newer_families_strategies_are_in_ufm_testing():
  """The loss family's, ReLU DUFM's and regression UFM's strategies are reachable from ufm.testing (loaded on first
  use), and a stored ReLU spec parses without importing its claims module first."""
  import subprocess
  import sys
  code = ("import jax; jax.config.update('jax_enable_x64', True)\n"
          "from ufm import testing\n"
          "s = testing.spec_from_json({'counts': [2, 2], 'd': 4, 'lam_W': 1e-3, 'lam_H': 1e-3, 'loss': 'mse', "
          "'family': 'relu_deep', 'depth': 3})\n"
          "assert type(s).__name__ == 'ReLUSpecL3' and s.problem().depth == 3\n"
          "assert testing.relu_specs(K=(3,)).example().K == 3\n"
          "assert isinstance(testing.regression_specs().example(), testing.RegressionSpec)\n"
          "assert testing.loss_family_specs('focal').example().loss == 'focal'\n"
          "print('ok')\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
