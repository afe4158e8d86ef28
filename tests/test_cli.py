"""``python -m ufm solve``: agreement with the closed form on untuned configurations; clean errors."""

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
  assert cli.main(["solve", *argv, "--x64", "--json"]) == 0
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
  assert cli.main(["solve", "--loss", "ce", "--counts", "5,2", "--d", "2", "--x64", "--steps", "200"]) == 0
  out = capsys.readouterr().out
  assert "theory: none (counts = (5, 2): the imbalanced CE-UFM has no closed form" in out
  assert out.splitlines()[3].split() == ["quantity", "solver", "theory", "rel.", "err"]


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
  assert cli.main(["solve", *argv, "--x64"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and message in err and err.startswith("ufm: error:")


@pytest.mark.parametrize("extra, message", [
    (["--loss", "hinge"], "invalid choice: 'hinge'"),
    (["--seed", "99999999999999999999"], "seed = 99999999999999999999 is out of range"),
    (["--steps", "100000000000"], "steps = 100000000000 is out of range"),
    (["--lam-W", "1e300"], "lam_W = 1e+300 overflows float32"),
])
def test_bad_input_in_a_real_process_has_no_traceback(extra, message):
  r = subprocess.run([sys.executable, "-m", "ufm", "solve", "--K", "3", "--n", "3", "--d", "2", *extra],
                     capture_output=True, text=True)
  assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
  assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_solve_deep_flags_build_a_deep_problem_and_validate():
  """--depth / --widths (issue 8): a deep linear UFM beside its closed form; bad values exit 2 with one line."""
  rec = cli.solve(cli._parser().parse_args(["solve", "--loss", "mse", "--counts", "3,2", "--widths", "3,2",
                                            "--lam-W", "1e-2", "--lam-H", "1e-2", "--x64", "--init-scale", "1.0"]))
  assert rec["config"]["d"] == 3 and rec["theory"]["geometry"] == "general orthogonal frame"
  assert abs(rec["objective"] - rec["theory"]["objective"]) <= 1e-8 * rec["theory"]["objective"]
  for extra, msg in ((["--widths", "3,x"], "widths"), (["--widths", "3,3", "--depth", "3"], "depth = 3"),
                     (["--d", "2", "--widths", "3,3"], "d = 2"), (["--d", "2", "--depth", "0"], "depth = 0")):
    with pytest.raises(ValueError, match=msg):
      cli.solve(cli._parser().parse_args(["solve", "--K", "3", "--n", "2", *extra]))
