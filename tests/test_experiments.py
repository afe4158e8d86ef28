"""Experiments: every module end to end at its smoke config, storage round trips, resume, and the CLI."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

import experiments  # noqa: E402
import ufm  # noqa: E402
from experiments import __main__ as cli  # noqa: E402
from experiments import runner  # noqa: E402
from helpers import assert_close  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _assert_same(a: xr.Dataset, b: xr.Dataset):
  assert set(a.data_vars) == set(b.data_vars) and set(a.coords) == set(b.coords)
  for name in list(a.data_vars) + list(a.coords):
    assert a[name].dims == b[name].dims, name
    assert a[name].dtype == b[name].dtype, name
    np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
  assert a.attrs == b.attrs


@pytest.mark.parametrize("name", experiments.EXPERIMENTS)
def test_experiment_smoke_end_to_end(name, tmp_path):
  module = experiments.get(name)
  for attr in experiments.REQUIRED:
    assert hasattr(module, attr), attr
  c = module.get_config("smoke")
  record = runner.run(name, c, out=tmp_path)
  ds = record.results
  for axis, values in runner.axes(name, c).items():  # the declared vmapped axes are named dims with their values
    assert axis in ds.dims, axis
    np.testing.assert_array_equal(ds[axis].values, np.asarray(values))
  for var in ds.data_vars:
    v = ds[var].values
    if v.dtype.kind == "f" and not var.startswith("pred_"):  # predictions are NaN where theory fixes nothing
      assert np.all(np.isfinite(v)), var
  for var in ds.data_vars:  # every solver run is reported, and none diverged at the smoke config
    if var.startswith("diverged"):
      assert not ds[var].values.any(), var
  _assert_same(runner.load_results(record.path), ds)
  assert json.loads((record.path / "config.json").read_text()) == runner.config_dict(c)
  meta = json.loads((record.path / "meta.json").read_text())
  for key in ("ufm", "jax", "jaxlib", "backend", "device_kind", "x64", "git_revision", "wall_time_s",
              "compile_time_s"):
    assert key in meta, key
  assert meta["x64"] is True and meta["wall_time_s"] >= meta["compile_time_s"] > 0
  assert not (tmp_path / name / f"{record.path.name}.partial").exists()  # checkpoints removed once stored
  fig = module.plot(ds, c)
  assert isinstance(fig, matplotlib.figure.Figure)
  paths = runner.save_figure(fig, name, [tmp_path / "figs"])
  plt.close(fig)
  assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_every_experiment_has_a_committed_figure_and_a_readme_row():
  readme = (REPO / "figures" / "README.md").read_text()
  for name in experiments.EXPERIMENTS:
    for ext in ("png", "pdf"):
      assert (REPO / "figures" / f"{name}.{ext}").is_file(), f"figures/{name}.{ext}"
    assert f"python -m experiments run {name}" in readme, name


# ------------------------------------------------------------------------------------------ storage

def _example_dataset() -> xr.Dataset:
  rng = np.random.default_rng(0)
  return xr.Dataset(
      {"f64": (("a", "b"), rng.normal(size=(2, 3))), "f32": (("b",), rng.normal(size=3).astype(np.float32)),
       "i32": (("a",), np.array([1, -2], np.int32)), "flag": (("a", "b"), rng.normal(size=(2, 3)) > 0),
       "label": (("a",), np.array(["ce", "mse+bias"])), "scalar": ((), np.float64(np.pi))},
      coords={"a": np.array([1e-3, 1e-2]), "b": np.array(["x", "y", "z"]), "t": ("b", np.arange(3, dtype=np.int64))},
      attrs={"K": 4, "lam": 5e-4, "names": ["p", "q"]})


def test_store_load_round_trip_preserves_values_dtypes_and_names(tmp_path):
  ds = _example_dataset()
  runner.save_results(ds, tmp_path)
  back = runner.load_results(tmp_path)
  _assert_same(back, ds)
  with np.load(tmp_path / "results.npz", allow_pickle=False) as z:  # readable without ufm
    np.testing.assert_array_equal(z["variables/f64"], ds.f64.values)
  schema = json.loads((tmp_path / "results.json").read_text())
  assert schema["variables"]["f64"]["dims"] == ["a", "b"]


def test_object_arrays_are_refused_on_save(tmp_path):
  ds = xr.Dataset({"obj": (("a",), np.array([{"x": 1}, None], dtype=object))})
  with pytest.raises(runner.ResultsError, match="obj.*dtype object"):
    runner.save_results(ds, tmp_path)


@pytest.mark.parametrize("damage", ["garbage_npz", "pickled_npz", "foreign_json", "bad_json", "missing",
                                    "shape_mismatch"])
def test_corrupted_or_foreign_results_give_a_clear_error(tmp_path, damage):
  runner.save_results(_example_dataset(), tmp_path)
  npz, js = tmp_path / "results.npz", tmp_path / "results.json"
  if damage == "garbage_npz":  # caught by the checksum; without one (older results), by the reader
    npz.write_bytes(b"not a zip file at all")
    match = "does not match the checksum"
  elif damage == "pickled_npz":  # an object array needs pickle: refused, never unpickled (checksum removed, so
    np.savez(npz, **{"variables/f64": np.array([object()], dtype=object)})  # that the reader itself is tested)
    schema = json.loads(js.read_text())
    del schema["sha256"]
    js.write_text(json.dumps(schema))
    match = "unreadable or corrupted"
  elif damage == "foreign_json":
    js.write_text(json.dumps({"format": "someone-else/2", "variables": {}}))
    match = "not a ufm results schema"
  elif damage == "bad_json":
    js.write_text("{truncated")
    match = "not valid JSON"
  elif damage == "missing":
    npz.unlink()
    match = "results.npz missing"
  else:
    schema = json.loads(js.read_text())
    schema["variables"]["f64"]["shape"] = [3, 2]
    js.write_text(json.dumps(schema))
    match = "the schema says"
  with pytest.raises(runner.ResultsError, match=match):
    runner.load_results(tmp_path)


# ------------------------------------------------------------------------------------------ runs

def test_second_run_reuses_and_recompute_replaces(tmp_path, monkeypatch):
  c = experiments.get("bias_mse_gram").get_config("smoke")
  first = runner.run("bias_mse_gram", c, out=tmp_path)
  calls = []
  module = experiments.get("bias_mse_gram")
  original = module.run
  monkeypatch.setattr(module, "run", lambda *a, **k: calls.append(1) or original(*a, **k))
  again = runner.run("bias_mse_gram", c, out=tmp_path)
  assert again.reused and not calls and again.path == first.path
  _assert_same(again.results, first.results)
  redo = runner.run("bias_mse_gram", c, out=tmp_path, recompute=True)
  assert not redo.reused and calls == [1] and redo.path == first.path
  _assert_same(redo.results, first.results)  # deterministic
  other = runner.run("bias_mse_gram", runner.apply_overrides(c, ["seed=5"]), out=tmp_path)
  assert other.path != first.path and first.path.is_dir()  # a different config never overwrites
  assert sorted(p.name for p in (tmp_path / "bias_mse_gram").iterdir()) == sorted([first.path.name, other.path.name])


class _Kill(Exception):
  pass


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
  name = "etf_emergence"
  c = experiments.get(name).get_config("smoke")  # settings ("ce", "mse+bias"), 4 chunks of 10 steps each
  assert c.settings == ("ce", "mse+bias") and c.num_steps == 40 and c.log_every == 10
  clean = runner.run(name, c, out=tmp_path / "clean", chunk_steps=10)
  real = ufm.sweep.run._advance_impl
  count = {"n": 0}

  def dying(*args, **kwargs):  # the process "dies" in the 7th chunk: the second sweep's third chunk
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):  # eval_shape on resume: not a chunk
      return real(*args, **kwargs)
    count["n"] += 1
    if count["n"] == 7:
      raise _Kill
    return real(*args, **kwargs)

  monkeypatch.setattr(ufm.sweep.run, "_advance_impl", dying)
  with pytest.raises(_Kill):
    runner.run(name, c, out=tmp_path / "killed", chunk_steps=10)
  partial = next((tmp_path / "killed" / name).glob("*.partial"))
  assert sorted(p.name for p in partial.iterdir()) == [f"{name}[ce].npz", f"{name}[mse+bias].npz"]
  count["n"] = 0
  resumed = runner.run(name, c, out=tmp_path / "killed", chunk_steps=10)
  assert count["n"] == 2  # 4 chunks per sweep: the first sweep was complete, the second resumed after chunk 2
  _assert_same(resumed.results, clean.results)
  assert not partial.exists()


@pytest.mark.parametrize("solver", ["gradient_descent", "lbfgs_reference"])
def test_chunked_sweep_with_progress_equals_one_call_bit_for_bit(solver, tmp_path):
  p = ufm.make_problem(ufm.balanced_counts(3, 2), d=4, lam_W=1e-2, lam_H=2e-2, loss="ce", bias=True)
  if solver == "gradient_descent":
    fn, hp, kw, chunk = ufm.gradient_descent, ufm.gd_hparams(0.5, momentum=0.5), dict(
        num_steps=60, log_every=10, trace_metrics=("nc1",)), 20
  else:
    fn, hp, kw, chunk = ufm.lbfgs_reference, ufm.lbfgs_hparams(), dict(max_steps=400), 8
  axes = {"lam_W": [1e-2, 3e-2], "seed": [0, 1]}
  whole = ufm.sweep.sweep(fn, p, hp, axes=axes, **kw)
  parts = ufm.sweep.sweep(fn, p, hp, axes=axes, chunk_steps=chunk, checkpoint=tmp_path / "ck.npz", progress=True, **kw)
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), whole.solution,
                      parts.solution)
  assert all(jax.tree.leaves(same)), same
  if solver == "lbfgs_reference":
    assert np.asarray(parts.solution.converged).all() and np.asarray(parts.solution.num_steps).max() > chunk
  with pytest.raises(ValueError, match="chunk_steps = 7: allowed: a multiple of"):
    ufm.sweep.sweep(fn, p, hp, axes=axes, chunk_steps=7, **kw)


def test_a_diverged_chunked_sweep_keeps_its_full_trace(tmp_path):
  """Every configuration diverges in the first chunk: gradient descent's chunks still all run (its trace rows
  are part of the result), so the output equals the one-call sweep, flagged diverged."""
  p = ufm.make_problem(ufm.balanced_counts(3, 2), d=3, lam_W=1e-2, lam_H=1e-2, loss="mse", bias=False)
  hp, kw = ufm.gd_hparams(1e4, init_scale=1.0), dict(axes={"seed": [0, 1]}, num_steps=60, log_every=10)
  whole = ufm.sweep.sweep(ufm.gradient_descent, p, hp, **kw)
  parts = ufm.sweep.sweep(ufm.gradient_descent, p, hp, chunk_steps=20, checkpoint=tmp_path / "ck.npz", **kw)
  assert np.asarray(parts.solution.diverged).all()
  assert parts.solution.trace.objective.shape == (2, 6)
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), whole.solution,
                      parts.solution)
  assert all(jax.tree.leaves(same))


def test_a_checkpoint_of_another_sweep_is_refused(tmp_path):
  p = ufm.make_problem(ufm.balanced_counts(3, 2), d=3, lam_W=1e-2, lam_H=1e-2, loss="ce", bias=False)
  kw = dict(axes={"seed": [0, 1]}, num_steps=20, log_every=10, checkpoint=tmp_path / "ck.npz")
  ufm.sweep.sweep(ufm.gradient_descent, p, ufm.gd_hparams(0.1), **kw)
  with pytest.raises(ufm.sweep.CheckpointError, match="different sweep"):
    ufm.sweep.sweep(ufm.gradient_descent, p, ufm.gd_hparams(0.2), **kw)
  (tmp_path / "ck.npz").write_bytes(b"junk")
  with pytest.raises(ufm.sweep.CheckpointError, match="unreadable"):
    ufm.sweep.sweep(ufm.gradient_descent, p, ufm.gd_hparams(0.1), **kw)


# ------------------------------------------------------------------------------------------ CLI

def test_list_names_every_experiment_within_100_columns(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert max(map(len, out.splitlines())) <= cli.WIDTH
  rows = out.splitlines()[1:-1]
  assert [r.split()[0] for r in rows] == list(experiments.EXPERIMENTS)
  for name in experiments.EXPERIMENTS:
    assert re.match(r"\d+ s\b", experiments.get(name).RUNTIME), name  # list shows the leading "N s"
  assert cli.main(["list", "--verbose"]) == 0
  verbose = capsys.readouterr().out
  assert max(map(len, verbose.splitlines())) <= cli.WIDTH
  flat = " ".join(verbose.split())  # wrapped lines joined
  for name in experiments.EXPERIMENTS:
    m = experiments.get(name)
    for text in (name, experiments.title(name), m.PAPER, m.FIGURE, m.RUNTIME):
      assert " ".join(text.split()) in flat, (name, text)


def test_experiments_are_discovered_and_checked(monkeypatch):
  """Every public module but the runner and the report is an experiment (no hand-kept list); a module without the
  contract is refused by name."""
  files = sorted(p.stem for p in (REPO / "experiments").glob("*.py") if not p.stem.startswith("_"))
  assert list(experiments.EXPERIMENTS) == [f for f in files if f not in ("report", "runner")]
  monkeypatch.setattr(experiments, "EXPERIMENTS", experiments.EXPERIMENTS + ("_common",))
  with pytest.raises(TypeError, match="experiments._common is not an experiment module: it lacks PAPER"):
    experiments.get("_common")


def test_the_runner_supplies_the_seed_axis_and_a_context():
  """A module without ``sweep`` gets ``{"seed": seed + arange(num_seeds)}``, validated before anything runs."""
  module = experiments.get("etf_emergence")
  assert not hasattr(module, "sweep")
  c = module.get_config("smoke")
  np.testing.assert_array_equal(runner.axes("etf_emergence", c)["seed"], c.seed + np.arange(c.num_seeds))
  for key, value, match in (("num_seeds", 0, "num_seeds = 0 is out of range"), ("seed", -1, "seed = -1")):
    with pytest.raises(ValueError, match=match):
      runner.compute("etf_emergence", runner.apply_overrides(c, [f"{key}={value}"]))


@pytest.mark.parametrize("argv, match", [
    (["run", "nope", "--smoke"], "unknown experiment 'nope'; valid experiments: benign_landscape, "),
    (["run", "etf_emergence", "--smoke", "--set", "Kay=3"], "unknown config key 'Kay'; valid keys: K, d,"),
    (["run", "etf_emergence", "--smoke", "--set", "K=three"], "--set K=three: expected a value of type int"),
    (["run", "etf_emergence", "--smoke", "--set", "K"], "expected key=value"),
    (["run", "etf_emergence", "--smoke", "--set", "K=1"], "K = 1 is out of range"),
    (["run", "etf_emergence", "--smoke", "--set", "lam_W=-1"], "lam_W = -1.0 is out of range"),
    (["run", "etf_emergence", "--smoke", "--set", "num_steps=45"], "num_steps = 45, log_every = 10"),
    (["run", "weight_decay_phase", "--smoke", "--set", "losses=('ce', 'hinge')"], "losses = .*allowed"),
    (["run", "benign_landscape", "--smoke", "--set", "ds=(1,)"], "no closed form|d = 1"),
    (["plot", "bias_mse_gram", "--smoke", "--set", "seed=99"], "no stored results for bias_mse_gram"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_cli_errors_are_one_line_and_exit_2_before_compiling(argv, match, capsys, tmp_path):
  compiles = []
  listener = lambda event, duration, **_: compiles.append(event) if "backend_compile" in event else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    with pytest.raises(SystemExit) as e:
      sys.exit(cli.main(argv + (["--out", str(tmp_path)] if argv[0] in ("run", "plot") else [])))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("experiments: error: "), err
  import re
  assert re.search(match, err), err
  assert not compiles, compiles


def test_cli_run_then_plot_writes_figures_where_asked(tmp_path, capsys):
  argv = ["bias_mse_gram", "--smoke", "--out", str(tmp_path), "--figures", str(tmp_path / "figs")]
  assert cli.main(["run", "--no-progress"] + argv) == 0
  out = capsys.readouterr().out
  assert "computed in" in out
  run_dir = next(p for p in (tmp_path / "bias_mse_gram").iterdir() if p.is_dir())
  for d in (run_dir, tmp_path / "figs"):
    assert (d / "bias_mse_gram.png").is_file() and (d / "bias_mse_gram.pdf").is_file()
  (tmp_path / "figs" / "bias_mse_gram.png").unlink()
  assert cli.main(["plot"] + argv) == 0  # from stored results, no recomputation
  assert "reused stored results" in capsys.readouterr().out
  assert (tmp_path / "figs" / "bias_mse_gram.png").is_file()


@pytest.mark.slow
def test_killed_process_resumes_from_its_last_chunk(tmp_path):
  """A real SIGKILL of `python -m experiments run` after its first checkpoint; the rerun finishes with the
  numbers of an uninterrupted run."""
  cmd = [sys.executable, "-m", "experiments", "run", "etf_emergence", "--smoke", "--no-progress",
         "--set", "num_steps=4000", "--set", "log_every=100"]
  env = dict(os.environ, JAX_ENABLE_X64="1")
  proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "a")], cwd=REPO, env=env)
  deadline = time.time() + 300
  while not list((tmp_path / "a" / "etf_emergence").glob("*.partial/*.npz")) and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert list((tmp_path / "a" / "etf_emergence").glob("*.partial/*.npz"))
  for out in ("a", "b"):
    subprocess.run(cmd + ["--out", str(tmp_path / out)], cwd=REPO, env=env, check=True)
  runs = [next(p for p in (tmp_path / o / "etf_emergence").iterdir() if p.is_dir() and "." not in p.name)
          for o in ("a", "b")]
  _assert_same(runner.load_results(runs[0]), runner.load_results(runs[1]))


@pytest.mark.slow
def test_etf_emergence_converges_to_the_closed_form():
  """A reduced full run: every seed's objective reaches f* and the NC metrics their targets."""
  c = runner.apply_overrides(experiments.get("etf_emergence").get_config(),
                             ["K=4", "n=5", "d=6", "num_seeds=4", "num_steps=10000", "log_every=1000"])
  ds = runner.compute("etf_emergence", c)
  for s in ds.setting.values:
    r = ds.sel(setting=s)
    assert_close(r.objective.values, np.full(4, float(r.pred_objective)), "reference")
    assert_close(r.trace_norm_W_sq.values[:, -1], np.full(4, float(r.pred_norm_W_sq)), "reference")
    for m in ("nc1", "etf_error_W", "etf_error_M", "self_duality"):
      assert_close(r[f"trace_{m}"].values[:, -1], np.full(4, float(r[f"pred_{m}"])), "reference_metric", m)


@pytest.mark.slow
def test_weight_decay_phase_matches_the_closed_form_across_the_threshold():
  """gtol 1e-12: at lam = 1e-4 the default 1e-10 leaves the norms 4e-8 off (measured; the argmin error is about
  gtol / lambda_min(Hessian) and lambda_min scales with lam), beyond TOL["reference"]."""
  c = runner.apply_overrides(experiments.get("weight_decay_phase").get_config(), ["num_lams=7", "gtol=1e-12"])
  ds = runner.compute("weight_decay_phase", c)
  ok = ds.converged.values
  assert ok.mean() > 0.9, ok
  for var in ("norm_W_sq", "norm_H_sq", "objective"):
    assert_close(ds[var].values[ok], ds[f"pred_{var}"].values[ok], "reference", var)


def test_runner_run_from_python_honours_the_configs_x64(tmp_path):
  """``experiments.runner.run`` switches float64 on for a configuration with ``x64 = True`` even when called from
  Python with x64 off (the CLI is not involved), and restores the caller's setting afterwards."""
  code = (
      "import json, jax, pathlib\n"
      "from experiments import runner, get\n"
      "c = get('bias_mse_gram').get_config('smoke')\n"
      "assert c.x64 and not jax.config.jax_enable_x64\n"
      f"rec = runner.run('bias_mse_gram', c, out={str(tmp_path)!r})\n"
      "meta = json.loads((pathlib.Path(rec.path) / 'meta.json').read_text())\n"
      "print(meta['x64'], rec.results[list(rec.results.data_vars)[0]].dtype, jax.config.jax_enable_x64)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_ENABLE_X64": "0"})
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["True", "float64", "False"]
