"""``python -m ufm solve``: agreement with the closed form on untuned configurations; clean errors."""

import argparse
import json
import subprocess
import sys

import pytest

from helpers import TOL, assert_close
from ufm import cli

UNTUNED = [  # configurations not used anywhere else in the suite
    ["--loss", "ce", "--K", "6", "--n", "3", "--d", "7", "--lam-W", "2e-3", "--lam-H", "7e-3"],
    ["--loss", "ce", "--bias", "--K", "3", "--n", "7", "--d", "2", "--lam-W", "4e-3", "--lam-H", "1e-2",
     "--lam-b", "3e-2"],
    ["--loss", "mse", "--K", "5", "--n", "4", "--d", "5", "--lam-W", "3e-3", "--lam-H", "1e-3"],
    ["--loss", "mse", "--bias", "--counts", "9,6,4", "--d", "3", "--lam-W", "1e-3", "--lam-H", "2e-3"],
]


@pytest.mark.parametrize("argv", UNTUNED, ids=["ce", "ce-bias", "mse", "mse-bias-imbalanced"])
def test_solve_json_agrees_with_closed_form(argv, capsys):
  assert cli.main(["solve", *argv, "--json"]) == 0
  rec = json.loads(capsys.readouterr().out)
  assert {"objective", "norm_W_sq", "norm_H_sq", "norm_b", "metrics", "theory", "diverged", "converged",
          "grad_norm", "config"} <= set(rec)
  assert rec["converged"] and not rec["diverged"] and rec["grad_norm"] <= 1e-10
  th = rec["theory"]
  rtol = TOL["reference"][0]
  for key in ("objective", "norm_W_sq", "norm_H_sq"):
    assert abs(rec[key] - th[key]) <= rtol * abs(th[key]), key
  for name, target in th["metrics"].items():
    assert_close(rec["metrics"][name], target, "reference_metric", name)


def test_solve_table_and_no_closed_form(capsys):
  assert cli.main(["solve", "--loss", "ce", "--counts", "5,2", "--d", "2", "--steps", "200"]) == 0
  out = capsys.readouterr().out
  assert "theory: none (counts = (5, 2): the imbalanced CE-UFM has no closed form" in out
  assert out.splitlines()[2].startswith("verdict: ")  # "no closed form" (or "not converged" at 200 steps)
  assert out.splitlines()[4].split() == ["quantity", "solver", "theory", "rel.", "err"]
  names = [line.split()[0] for line in out.splitlines()[5:]]
  assert len(names) == len(set(names)), "a quantity printed twice"
  assert {"objective", "norm_W_sq", "norm_H_sq", "norm_b", "nc1"} <= set(names)


@pytest.mark.parametrize("command", [[], ["solve"], ["demo"], ["measure"], ["claims"], ["claims", "list"],
                                     ["claims", "run"],
                                     ["claims", "check"]])
def test_help_is_plain_text_with_defaults(command, capsys, monkeypatch):
  """--help: plain text (no reST markup), whole sentences, every option explained, defaults shown."""
  monkeypatch.setenv("COLUMNS", "100")
  with pytest.raises(SystemExit) as e:
    cli.main([*command, "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for markup in ("``", ":mod:", ":func:", ":math:"):
    assert markup not in out, markup
  if not command:
    assert "Simulate the unconstrained features model" in out and "examples:" in out
    assert out.rstrip().endswith("before anything is compiled.")
  if command == ["solve"]:
    for flag, default in (("--loss", "ce"), ("--lam-W", "0.005"), ("--solver", "lbfgs"), ("--init-scale", "0.1"),
                          ("--seed", "0")):
      i = out.index("\n  " + flag + " ", out.index("options:"))
      assert f"(default: {default}" in out[i:out.index("\n  -", i + 1)], flag


def test_every_option_and_command_is_explained():
  def walk(parser):
    for action in parser._actions:
      yield parser.prog, action
      if isinstance(action, argparse._SubParsersAction):
        for choice in action._choices_actions:
          assert choice.help, f"{parser.prog} {choice.dest}"
        for sub in action.choices.values():
          yield from walk(sub)
  for prog, action in walk(cli._parser()):
    if not isinstance(action, argparse._SubParsersAction):
      assert action.help and "\n" not in action.help, f"{prog} {action.option_strings or action.dest}"


def test_claims_defaults_match_ufm_claims():
  from ufm import claims
  args = cli._parser().parse_args(["claims", "run"])
  assert args.store == claims.DEFAULT_STORE_DIR and args.examples == claims.DEFAULT_EXAMPLES


@pytest.mark.parametrize("argv, message", [
    (["--K", "1", "--n", "3", "--d", "2"], "K = 1"),
    (["--K", "3", "--n", "0", "--d", "2"], "n = 0"),
    (["--K", "3", "--n", "3", "--d", "0"], "d = 0"),
    (["--K", "3", "--n", "3", "--d", "2", "--lam-H", "-1"], "lam_H = -1.0 is out of range"),
    (["--K", "3", "--n", "3", "--d", "2", "--lam-W", "nan"], "lam_W = nan is not finite"),
    (["--K", "3", "--n", "3", "--d", "2", "--solver", "gd", "--lr", "0"], "lr = 0.0 is out of range"),
    (["--counts", "3,2.5", "--d", "2"], "not a comma-separated list of integers"),
    (["--K", "3", "--n", "3", "--d", "2", "--lam-b", "0.1"], "lam_b = 0.1 has no effect without a bias"),
    (["--K", "3", "--n", "3", "--d", "2", "--steps", "0"], "steps = 0 is out of range"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
  assert cli.main(["solve", *argv]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and message in err and err.startswith("ufm: error:")


@pytest.mark.parametrize("extra, message", [
    (["--loss", "hinge"], "invalid choice: 'hinge'"),
    (["--seed", "99999999999999999999"], "seed = 99999999999999999999 is out of range"),
    (["--steps", "100000000000"], "steps = 100000000000 is out of range"),
    (["--float32", "--lam-W", "1e300"], "lam_W = 1e+300 overflows float32"),
])
def test_bad_input_in_a_real_process_has_no_traceback(extra, message):
  r = subprocess.run([sys.executable, "-m", "ufm", "solve", "--K", "3", "--n", "3", "--d", "2", *extra],
                     capture_output=True, text=True)
  assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
  assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_solve_deep_flags_build_a_deep_problem_and_validate():
  """--depth / --widths: a deep linear UFM beside its closed form; bad values exit 2 with one line."""
  rec = cli.solve(cli._parser().parse_args(["solve", "--loss", "mse", "--counts", "3,2", "--widths", "3,2",
                                            "--lam-W", "1e-2", "--lam-H", "1e-2", "--init-scale", "1.0"]))
  assert rec["config"]["d"] == 3 and rec["theory"]["geometry"] == "general orthogonal frame"
  assert abs(rec["objective"] - rec["theory"]["objective"]) <= 1e-8 * rec["theory"]["objective"]
  for extra, msg in ((["--widths", "3,x"], "widths"), (["--widths", "3,3", "--depth", "3"], "depth = 3"),
                     (["--d", "2", "--widths", "3,3"], "d = 2"), (["--d", "2", "--depth", "0"], "depth = 0")):
    with pytest.raises(ValueError, match=msg):
      cli.solve(cli._parser().parse_args(["solve", "--K", "3", "--n", "2", *extra]))


@pytest.mark.parametrize("argv, geometry", [
    (["--loss", "focal", "--loss-param", "gamma=3", "--K", "3", "--n", "2", "--d", "3"], "simplex ETF"),
    (["--loss", "label_smoothing", "--loss-param", "alpha=0.2", "--K", "3", "--n", "2", "--d", "2"], "simplex ETF"),
    (["--activation", "relu", "--K", "2", "--n", "1", "--d", "4", "--depth", "2", "--lam-W", "2e-3",
      "--lam-H", "2e-3", "--init-scale", "0.3"], "DNC (orthogonal frames)"),
    (["--random-targets", "2,12", "--d", "3", "--bias", "--lam-W", "0.02", "--lam-H", "0.03"], None),
], ids=["focal", "label-smoothing", "relu", "regression"])
def test_solve_other_families_meet_their_closed_forms(argv, geometry, capsys):
  """The loss family (with its parameters), the ReLU DUFM and the regression UFM through the same command: the
  solve reaches the closed form (objective and norms to the reference tolerance), metrics of the family."""
  assert cli.main(["solve", *argv, "--json"]) == 0
  rec = json.loads(capsys.readouterr().out)
  th = rec["theory"]
  assert rec["verdict"] == "global" and rec["converged"], rec["verdict_message"]
  rtol = TOL["reference"][0]
  for key in ("objective", "norm_W_sq", "norm_H_sq"):
    assert abs(rec[key] - th[key]) <= rtol * abs(th[key]), key
  if geometry:
    assert th["geometry"] == geometry
  fam = rec["config"]["family"]
  if fam == "regression":
    assert rec["config"]["targets_shape"] == [2, 12] and {"nrc1", "nrc2", "nrc3"} == set(rec["metrics"])
    assert max(rec["metrics"].values()) <= 1e-12
  elif fam == "relu_deep":
    assert rec["metrics"]["mean_rank_last"] == 2 and rec["metrics"]["nc1"] <= 1e-12
  else:
    lp = rec["config"]["loss_params"]
    assert lp == ({"gamma": 3.0} if "focal" in argv else {"alpha": 0.2})


@pytest.mark.parametrize("argv, message", [
    (["--K", "3", "--n", "2", "--d", "2", "--loss", "focal", "--loss-param", "gamma=-1"],
     "gamma = -1.0 is out of range"),
    (["--K", "3", "--n", "2", "--d", "2", "--loss", "focal", "--loss-param", "alpha=0.1"],
     "alpha is not a parameter of loss = 'focal'"),
    (["--K", "3", "--n", "2", "--d", "2", "--loss", "ce", "--loss-param", "alpha=0.1"],
     "loss = 'ce' has no parameters"),
    (["--K", "3", "--n", "2", "--d", "2", "--loss", "focal", "--loss-param", "gamma"], "is not NAME=VALUE"),
    (["--K", "3", "--n", "2", "--d", "2", "--activation", "relu"], "activation = 'relu' needs layers"),
    (["--K", "3", "--n", "2", "--d", "2", "--depth", "2", "--activation", "relu", "--bias"], "bias-free"),
    (["--random-targets", "2,1", "--d", "2"], "N = 1 is out of range"),
    (["--random-targets", "2", "--d", "2"], "random_targets = '2' is not n,N"),
    (["--random-targets", "2,5", "--K", "3", "--d", "2"], "has targets, not classes"),
    (["--random-targets", "2,5", "--d", "2", "--loss", "ce"], "loss = 'ce': the regression UFM"),
    (["--random-targets", "2,5", "--d", "2", "--depth", "2"], "the regression UFM has one layer"),
    (["--targets", "missing.npy", "--d", "2"], "targets = 'missing.npy' is not a readable .npy"),
])
def test_bad_family_input_is_one_line_and_exit_2(argv, message, capsys):
  assert cli.main(["solve", *argv]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and message in err, err
