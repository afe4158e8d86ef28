"""Fuzzing bad input: every rejected argument of the CLIs and constructors is one line naming the parameter.

Hypothesis draws invalid values per parameter (out of range, wrong type, non-finite, empty, too large to allocate);
each must give exit status 2 (CLI) or ``ValueError`` (API), a single line, the parameter's name in it, and no
traceback, before anything compiles (a rejected value never starts a solve).
"""

import contextlib
import io

import jax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ufm
from experiments import __main__ as experiments_cli
from ufm import cli
from ufm.deep import make_deep_problem

BASE = ["solve", "--K", "3", "--n", "2", "--d", "3"]

_ints_below_1 = st.integers(max_value=0).map(str)
_not_int = st.sampled_from(["1.5", "abc", "", "1e3", "nan"])
_not_real = st.sampled_from(["abc", "", "nan", "inf", "-inf", "1,2"])
_negative = st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False).map(repr)

#: option -> (strategy of invalid values, the name the message must contain)
CLI_BAD = {
    "--K": (st.one_of(st.integers(max_value=1).map(str), _not_int, st.just("1000000000")), "K"),
    "--n": (st.one_of(_ints_below_1, _not_int, st.just("100000000000")), "n"),
    "--d": (st.one_of(_ints_below_1, _not_int, st.just("1000000000")), "d"),
    "--depth": (st.one_of(_ints_below_1, _not_int, st.just("1000000")), "depth"),
    "--lam-W": (st.one_of(_negative, _not_real), "lam_W"),
    "--lam-H": (st.one_of(_negative, _not_real), "lam_H"),
    "--lr": (st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False).map(repr), _not_real), "lr"),
    "--init-scale": (st.one_of(_negative, st.just("0"), _not_real), "init_scale"),
    "--steps": (st.one_of(_ints_below_1, _not_int, st.just("100000000000")), "steps"),
    "--seed": (st.one_of(st.integers(max_value=-1).map(str), st.just(str(2**32)), _not_int), "seed"),
    "--restarts": (st.one_of(_ints_below_1, _not_int, st.just("100000")), "restarts"),
    "--counts": (st.sampled_from(["5", "0,1", "a,b", "5,-2", f"5,{2**63}", "", "1000000000,1000000000"]), "counts"),
}


@given(data=st.data(), option=st.sampled_from(sorted(CLI_BAD)))
def test_cli_solve_rejects_bad_values_in_one_line(data, option):
  strategy, name = CLI_BAD[option]
  value = data.draw(strategy, label=option)
  argv = list(BASE)
  if option in ("--K", "--n") or option == "--counts":
    argv = ["solve", "--d", "3"] + (["--counts", value] if option == "--counts" else
                                    (["--K", value, "--n", "2"] if option == "--K" else ["--K", "3", "--n", value]))
  else:
    argv += [option, value]
  if option == "--steps":
    argv += ["--solver", "lbfgs"]
  if option == "--lr":
    argv += ["--solver", "gd"]  # lbfgs takes no learning rate
  compiles = []
  listener = lambda event, duration, **_: compiles.append(event) if "backend_compile" in event else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  stderr, stdout = io.StringIO(), io.StringIO()
  try:
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
      try:
        rc = cli.main(argv)
      except SystemExit as e:  # argparse's own refusals (a non-number for a typed option)
        rc = e.code
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  err = stderr.getvalue()
  assert rc == 2, (argv, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("ufm: error:") and "Traceback" not in err, err
  assert name in lines[0] or option in lines[0], (option, lines[0])
  assert not compiles, (argv, "compiled before refusing")


#: make_problem / make_deep_problem keyword -> invalid values
API_BAD = {
    "counts": [[5], [0, 3], [5, 2**63], "55", [2.5, 3], [10**9, 10**9]],
    "d": [0, -3, 2.0, "4", None, 10**12],
    "lam_W": [-1e-3, float("nan"), float("inf"), [], "x", [[-1.0]]],
    "lam_H": [-1e-3, float("nan"), [], "x"],
    "loss": ["hinge", None, 3],
    "dtype": ["float16", "bfloat16", "int32", "complex64", "nope"],
}


@given(data=st.data(), key=st.sampled_from(sorted(API_BAD)))
def test_make_problem_rejects_bad_arguments_in_one_line(data, key):
  kwargs = dict(counts=[3, 2], d=3, lam_W=1e-2, lam_H=1e-2, loss="ce")
  kwargs[key] = data.draw(st.sampled_from(API_BAD[key]), label=key)
  counts = kwargs.pop("counts")
  with pytest.raises(ValueError) as e:
    ufm.make_problem(counts, **kwargs)
  msg = str(e.value)
  assert "\n" not in msg and (key in msg or (key == "counts" and ("K =" in msg or "N =" in msg))), msg


@pytest.mark.parametrize("kwargs, name", [
    (dict(d=3, depth=10**6), "depth"), (dict(widths=[3] * 1000), "depth"), (dict(d=3, depth=0), "depth"),
    (dict(widths=[3, 0]), "widths[1]"), (dict(widths=[10**6, 10**6]), "the arrays of one solve"),
])
def test_make_deep_problem_bounds_depth_and_memory(kwargs, name):
  with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
    make_deep_problem([2, 2], lam_W=1e-2, lam_H=1e-2, **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_steps="10", log_every=10), "num_steps"), (dict(num_steps=None, log_every=10), "num_steps"),
    (dict(num_steps=10**9, log_every=10), "num_steps"), (dict(num_steps=10, log_every=0), "log_every"),
    (dict(num_steps=10, log_every=10, step_size=0.1), "step_size"),
])
def test_solver_options_are_checked_by_name(kwargs, name):
  p = ufm.make_problem(ufm.balanced_counts(3, 2), d=3, lam_W=1e-2, lam_H=1e-2)
  with pytest.raises(ValueError, match=name):
    ufm.sweep.sweep(ufm.gradient_descent, p, ufm.gd_hparams(0.1), axes={"seed": [0, 1]}, **kwargs)


@pytest.mark.parametrize("argv, match", [
    (["run", "etf_emergence", "--smoke", "--set", "K=100000", "--set", "n=10000"], "need"),
    (["run", "etf_emergence", "--smoke", "--out", "{file}/results"], "out = "),  # a directory inside a file
    (["run", "etf_emergence", "--smoke", "--figures", "{file}"], "figures = "),  # a file, not a directory
    (["run", "etf_emergence", "--smoke", "--set", "num_seeds=0"], "num_seeds"),
])
def test_experiments_cli_refuses_before_computing_and_leaves_nothing(argv, match, capsys, tmp_path):
  blocker = tmp_path / "a-file"
  blocker.write_text("x")
  argv = [a.replace("{file}", str(blocker)) for a in argv]
  out = [] if "--out" in argv else ["--out", str(tmp_path)]
  assert experiments_cli.main(argv + out) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("experiments: error:") and match in err[0], err
  assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))  # no empty .partial/ left behind


def test_claims_store_that_is_a_file_is_refused(capsys, tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  assert cli.main(["claims", "list", "--store", str(f)]) == 2
  assert "is not a directory" in capsys.readouterr().err
