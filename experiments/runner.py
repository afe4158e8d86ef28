r"""Running, storing and reloading experiments.

A run of experiment ``NAME`` with configuration ``c`` lives in
``<out>/NAME/<hash>/`` where ``hash`` is the first 16 hex digits of the SHA-256 of
``{"experiment": NAME, "config": c, "ufm": ufm.__version__}`` (canonical JSON). The directory
holds

* ``config.json``: the configuration;
* ``results.npz`` + ``results.json``: the results, an ``xarray.Dataset`` stored as plain
  arrays (``numpy.load(..., allow_pickle=False)`` opens them without ``ufm``) and a JSON
  schema giving every variable's dimension names, dtype, shape and attributes, the
  coordinates and the dataset attributes (format ``ufm-results/1``);
* ``meta.json``: ufm / jax / jaxlib / numpy / python versions, backend, device kind, x64,
  git revision (and whether the tree was dirty), wall time, compile time, date;
* ``NAME.png`` and ``NAME.pdf``: the figure.

The directory is written under a temporary name and renamed into place, so a reader never
sees a half-written run; a second run of the same configuration reuses it (unless
``recompute``); results of a different configuration land in a different directory and are
never overwritten. While a run is in progress its resumable sweeps checkpoint into
``<out>/NAME/<hash>.partial/``; a killed run started again continues from the last
completed chunk. Loading never unpickles.
"""

import ast
import contextlib
import copy
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import xarray as xr

import experiments
import ufm
from ufm import validate
from ufm.io import atomic_write, check_writable_dir

__all__ = ["Context", "ResultsError", "RunRecord", "apply_overrides", "axes", "compute", "config_dict", "config_hash",
           "convergence", "convergence_line", "default_figures_dir", "environment", "figure_paths", "gate",
           "load_results", "read_run", "run", "save_figure", "save_results", "seeds"]

FORMAT = "ufm-results/1"
_REPO = Path(__file__).resolve().parent.parent


class ResultsError(ValueError):
  """A results directory or file that is missing, corrupted, or not ufm results."""


# ----------------------------------------------------------------------------------- configs

def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic,)):
    return x.item()
  return x


def config_dict(config: ml_collections.ConfigDict) -> dict:
  """The configuration as JSON-ready nested dicts (tuples become lists)."""
  return _jsonable(config.to_dict())


def config_hash(name: str, config: ml_collections.ConfigDict) -> str:
  """First 16 hex digits of SHA-256 over the canonical JSON of experiment, configuration, ufm version."""
  blob = json.dumps({"experiment": name, "config": config_dict(config), "ufm": ufm.__version__},
                    sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _coerce(key: str, text: str, old):
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text  # a bare word: a string
  kind = type(old)
  if isinstance(old, bool):
    ok = isinstance(value, bool)
  elif isinstance(old, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(old, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  elif isinstance(old, (tuple, list)):
    ok = isinstance(value, (tuple, list))
    if ok and old and all(isinstance(v, float) for v in old):
      ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
      value = [float(v) for v in value] if ok else value
    value = kind(value) if ok else value
  elif isinstance(old, str):
    ok = isinstance(value, str)
  elif old is None:
    ok = True
  else:
    ok = isinstance(value, kind)
  if not ok:
    raise ValueError(f"--set {key}={text}: expected a value of type {kind.__name__} (current value {old!r})")
  return value


def apply_overrides(config: ml_collections.ConfigDict, sets: list[str]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``key=value`` overrides (values parsed as Python literals; dotted keys).

  Raises:
    ValueError: malformed item, unknown key (listing the valid keys), or a value whose type
      differs from the default's (ints are accepted for floats).
  """
  config = copy.deepcopy(config)
  flat = _flatten(config_dict(config))
  for item in sets:
    if "=" not in item:
      raise ValueError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if key not in flat:
      raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(flat))}")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    old = node[leaf]
    with node.ignore_type():
      node[leaf] = _coerce(key, text.strip(), old)
  return config


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# ----------------------------------------------------------------------------------- context

class Context:
  """What an experiment's ``run`` uses to call the solvers: progress bars and resumable checkpoints.

  ``ctx.sweep(tag, solver, problem, hparams, axes=..., **solver_kwargs)`` is
  :func:`ufm.sweep.sweep` with, for resumable solvers (gradient descent), a checkpoint file
  ``<workdir>/<tag>.npz`` and a progress bar labelled ``tag``. ``tag`` must be unique within
  one run. Without a ``workdir`` (:func:`compute` from Python) nothing is written. ``ctx.axes``
  holds the experiment's vmapped axes (:func:`axes`), set by :func:`compute`.
  """

  def __init__(self, workdir: str | os.PathLike | None = None, *, progress: bool = False,
               chunk_steps: int | None = None, axes: dict | None = None):
    self.workdir = None if workdir is None else Path(workdir)
    self.axes = axes
    self.progress = progress
    self.chunk_steps = chunk_steps
    self._tags: set[str] = set()

  def sweep(self, tag: str, solver, problem, hparams, *, axes: dict, **solver_kwargs) -> ufm.sweep.SweepResult:
    if tag in self._tags:
      raise ValueError(f"sweep tag {tag!r} used twice in one run")
    self._tags.add(tag)
    resumable = hasattr(solver, "stepper")
    kw = dict(solver_kwargs)
    if resumable:
      if self.workdir is not None:
        kw["checkpoint"] = self.workdir / f"{tag}.npz"
      if self.progress:
        kw["progress"] = tag
      if self.chunk_steps is not None:
        kw["chunk_steps"] = self.chunk_steps
    return ufm.sweep.sweep(solver, problem, hparams, axes=axes, **kw)


# ----------------------------------------------------------------------------------- storage

def _write_json(path: Path, obj) -> None:
  atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def _check_storable(name: str, a: np.ndarray):
  if a.dtype.kind not in "biufU":
    raise ResultsError(f"variable {name!r} has dtype {a.dtype}; storable: bool, integer, float, unicode")


def save_results(ds: xr.Dataset, directory: str | os.PathLike) -> None:
  """Writes ``ds`` as ``results.npz`` (arrays) + ``results.json`` (schema) into ``directory``."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays, schema = {}, {"format": FORMAT, "attrs": _jsonable(dict(ds.attrs)), "coords": {}, "variables": {}}
  for kind, items in (("coords", ds.coords.items()), ("variables", ds.data_vars.items())):
    for name, var in items:
      a = np.asarray(var.values)
      _check_storable(str(name), a)
      key = f"{kind}/{name}"
      arrays[key] = a
      schema[kind][str(name)] = {"dims": list(var.dims), "dtype": a.dtype.str, "shape": list(a.shape),
                                 "attrs": _jsonable(dict(var.attrs)), "key": key}
  atomic_write(directory / "results.npz", lambda f: np.savez(f, **arrays))
  schema["sha256"] = _sha256(directory / "results.npz")  # what the schema describes, byte for byte
  _write_json(directory / "results.json", schema)


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def load_results(directory: str | os.PathLike) -> xr.Dataset:
  """Reads what :func:`save_results` wrote (``allow_pickle=False``) and checks it against its schema.

  Raises:
    ResultsError: missing files, unreadable or foreign files, or arrays that disagree with the schema.
  """
  directory = Path(directory)
  try:
    schema = json.loads((directory / "results.json").read_text())
  except FileNotFoundError as e:
    raise ResultsError(f"no results in {directory} (results.json missing)") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ResultsError(f"{directory / 'results.json'} is not valid JSON: {e}") from e
  if not isinstance(schema, dict) or schema.get("format") != FORMAT:
    got = schema.get("format") if isinstance(schema, dict) else type(schema).__name__
    raise ResultsError(f"{directory / 'results.json'} is not a ufm results schema (format {got!r}, "
                       f"expected {FORMAT!r})")
  stored = schema.get("sha256")
  if stored is not None and (directory / "results.npz").is_file() and _sha256(directory / "results.npz") != stored:
    raise ResultsError(f"{directory / 'results.npz'} does not match the checksum in results.json (modified or "
                       "corrupted); rerun with --recompute")
  try:
    with np.load(directory / "results.npz", allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except FileNotFoundError as e:
    raise ResultsError(f"no results in {directory} (results.npz missing)") from e
  except Exception as e:  # noqa: BLE001 -- a corrupted zip or a pickled object array
    raise ResultsError(f"{directory / 'results.npz'} is unreadable or corrupted ({type(e).__name__}: {e})") from e

  def take(entry, name):
    a = arrays.get(entry.get("key"))
    if a is None:
      raise ResultsError(f"{directory}: array for {name!r} missing from results.npz")
    if a.dtype.str != entry["dtype"] or list(a.shape) != entry["shape"] or len(entry["dims"]) != a.ndim:
      raise ResultsError(f"{directory}: {name!r} has dtype {a.dtype.str} shape {list(a.shape)}; the schema says "
                         f"{entry['dtype']} {entry['shape']} dims {entry['dims']}")
    return (tuple(entry["dims"]), a, entry.get("attrs", {}))

  try:
    coords = {k: take(v, k) for k, v in schema["coords"].items()}
    data = {k: take(v, k) for k, v in schema["variables"].items()}
    return xr.Dataset(data, coords=coords, attrs=schema.get("attrs", {}))
  except (KeyError, TypeError, AttributeError) as e:
    raise ResultsError(f"{directory / 'results.json'} is malformed ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------------- convergence

_FLAG = re.compile(r"^(?P<pre>(?:\w+_)?)converged(?P<post>(?:_\w+)?)$")


def convergence(ds: xr.Dataset) -> dict:
  """How the solver runs of a results dataset ended: converged, diverged, or stopped (neither: the step budget ran
  out first).

  Every boolean variable named ``converged`` (or ``<prefix>_converged``, ``converged_<suffix>``) is one group of runs,
  one run per element; its partner ``diverged`` (same prefix and suffix) marks the diverged runs of the group (absent:
  none diverged). A run is *diverged* when its ``diverged`` flag is set, *converged* when its ``converged`` flag is
  set (the solver's gradient-norm test, ``|grad f| <= gtol``, or the experiment's own criterion, said in its
  docstring), and *stopped* otherwise. A ``diverged`` variable without a ``converged`` partner is a group of runs
  with a fixed budget and no convergence test (networks trained for a number of epochs): its runs are *diverged* or
  *stopped*.

  Returns:
    ``{"runs", "converged", "diverged", "stopped", "groups": {name: {...the same counts...}}}``; all counts 0 when
    the dataset has no flag (an experiment without an iterative solve).
  """
  groups = {}
  names = [str(v) for v in ds.data_vars]
  for name in names:
    m = _FLAG.match(name)
    if m is None or ds[name].dtype != bool:
      continue
    conv = np.asarray(ds[name].values, bool)
    partner = f"{m['pre']}diverged{m['post']}"
    div = np.asarray(ds[partner].values, bool) if partner in names else np.zeros_like(conv)
    div = np.broadcast_to(div, conv.shape)
    groups[name] = {"runs": int(conv.size), "converged": int((conv & ~div).sum()), "diverged": int(div.sum()),
                    "stopped": int((~conv & ~div).sum())}
  for name in names:  # budgets without a convergence test
    m = re.match(r"^(?P<pre>(?:\w+_)?)diverged(?P<post>(?:_\w+)?)$", name)
    if m is None or ds[name].dtype != bool or f"{m['pre']}converged{m['post']}" in names:
      continue
    div = np.asarray(ds[name].values, bool)
    groups[name] = {"runs": int(div.size), "converged": 0, "diverged": int(div.sum()), "stopped": int((~div).sum())}
  total = {k: sum(g[k] for g in groups.values()) for k in ("runs", "converged", "diverged", "stopped")}
  return dict(total, groups=groups)


def convergence_line(summary: dict) -> str:
  """One line for :func:`convergence`'s counts, e.g. ``"runs: 64; converged 60, stopped 4 (not converged), diverged 0"``."""
  if not summary["runs"]:
    return "runs: no iterative solve (closed forms and exact computations only)"
  return (f"runs: {summary['runs']}; converged {summary['converged']}, stopped {summary['stopped']} (not converged), "
          f"diverged {summary['diverged']}")


def gate(converged, diverged=None) -> tuple[np.ndarray, str]:
  """The runs a figure plots: the converged ones (a boolean mask), and a note on those left out (``""`` when none):
  the convergence gate of every figure that is not about divergence itself (its runs' ``converged`` and
  ``diverged`` flags, as :func:`convergence` reads them)."""
  conv = np.asarray(converged, bool)
  div = np.zeros_like(conv) if diverged is None else np.broadcast_to(np.asarray(diverged, bool), conv.shape)
  ok = conv & ~div
  left = int((~ok).sum())
  if not left:
    return ok, ""
  return ok, (f"{left} of {ok.size} runs left out ({int(div.sum())} diverged, {int((~conv & ~div).sum())} "
              "not converged)")


# ----------------------------------------------------------------------------------- metadata

def _git(*args) -> str | None:
  try:
    out = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def environment() -> dict:
  """Versions, backend and device, x64 flag and git revision of the running process."""
  import jaxlib
  dev = jax.devices()[0]
  status = _git("status", "--porcelain", "--untracked-files=no")
  return {
      "ufm": ufm.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
      "xarray": xr.__version__, "python": platform.python_version(), "platform": platform.platform(),
      "backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
      "cpu_count": os.cpu_count(), "x64": bool(jax.config.jax_enable_x64),
      "git_revision": _git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
  }


@contextlib.contextmanager
def _compile_timer():
  """Sums JAX's tracing, lowering and backend-compile durations (``jax.monitoring`` events)."""
  total = {"s": 0.0}
  events = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
            "/jax/core/compile/backend_compile_duration")

  def listener(event, duration, **_):
    if event in events:
      total["s"] += duration
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield total
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


# ----------------------------------------------------------------------------------- running

class RunRecord(NamedTuple):
  """One stored run: its directory, results, configuration, metadata and whether it was reused."""
  path: Path
  results: xr.Dataset
  config: ml_collections.ConfigDict
  meta: dict
  reused: bool


def _read_json(path: Path) -> Any:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError as e:
    raise ResultsError(f"{path} is missing") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ResultsError(f"{path} is not valid JSON: {e}") from e


def read_run(name: str, config: ml_collections.ConfigDict, out: str | os.PathLike = "results") -> RunRecord:
  """The stored run of ``name`` at ``config`` (no computation); ``ResultsError`` when absent or foreign."""
  path = Path(out) / name / config_hash(name, config)
  if not path.is_dir():
    raise ResultsError(f"no stored results for {name} with this configuration (expected {path}); "
                       f"run `python -m experiments run {name}` with the same options first")
  stored = _read_json(path / "config.json")
  if stored != config_dict(config):
    raise ResultsError(f"{path / 'config.json'} holds a different configuration (hash collision or edited file)")
  return RunRecord(path=path, results=load_results(path), config=config, meta=_read_json(path / "meta.json"),
                   reused=True)


def _precision(config):
  """float64 on for a configuration with ``x64 = True``, whoever calls (the CLI or Python), the caller's setting
  restored afterwards; ``x64 = False`` leaves the caller's setting as it is (as the CLI does)."""
  return jax.enable_x64(True) if getattr(config, "x64", False) else contextlib.nullcontext()


def axes(name: str, config: ml_collections.ConfigDict) -> dict:
  """The vmapped axes of experiment ``name`` at ``config``: its module's ``sweep(config)`` where it defines one,
  else the seed axis ``{"seed": config.seed + arange(config.num_seeds)}`` (validated)."""
  module = experiments.get(name)
  if hasattr(module, "sweep"):
    with _precision(config):
      return module.sweep(config)
  for key in ("seed", "num_seeds"):
    if key not in config:
      raise TypeError(f"experiments.{name} defines no sweep(config) and its configuration has no {key!r}")
  return {"seed": seeds(config)}


def seeds(config: ml_collections.ConfigDict) -> np.ndarray:
  """``config.seed + arange(config.num_seeds)``, validated (``num_seeds >= 1``, seeds in ``[0, 2**32)``)."""
  num = validate.check_int("num_seeds", config.num_seeds, lo=1)
  return validate.check_seed("seed", np.arange(num) + validate.check_int("seed", config.seed, lo=0))


def compute(name: str, config: ml_collections.ConfigDict | None = None, ctx: Context | None = None) -> xr.Dataset:
  """The results of experiment ``name`` at ``config`` (default: the full configuration), nothing stored.

  Computes the axes (:func:`axes`) into ``ctx`` (default: a :class:`Context` that writes nothing), and runs the
  module's ``run(config, ctx)`` in float64 when ``config.x64`` (the caller's setting restored afterwards).

  Raises:
    ValueError: an unknown name or a bad configuration value (before anything compiles).
    TypeError: ``run`` returned something other than an ``xarray.Dataset``.
  """
  module = experiments.get(name)
  config = module.get_config() if config is None else config
  ctx = Context() if ctx is None else ctx
  with _precision(config):
    ctx.axes = axes(name, config)
    results = module.run(config, ctx)
  if not isinstance(results, xr.Dataset):
    raise TypeError(f"experiments.{name}.run returned {type(results).__name__}; expected an xarray.Dataset")
  return results


def run(name: str, config: ml_collections.ConfigDict | None = None, *, out: str | os.PathLike = "results",
        recompute: bool = False, progress: bool = False, chunk_steps: int | None = None) -> RunRecord:
  """Runs experiment ``name`` (or reuses its stored result) and stores it atomically.

  Args:
    name: a name from :data:`experiments.EXPERIMENTS`.
    config: the configuration (default: the module's full ``get_config()``).
    out: the results root.
    recompute: run even when results of this configuration exist (they are replaced atomically).
    progress: progress bars for the sweeps.
    chunk_steps: steps per resumable chunk (default: the sweep's, about 10 chunks).
  """
  module = experiments.get(name)
  config = module.get_config() if config is None else config
  axes(name, config)  # validates the axes before anything is created on disk
  h = config_hash(name, config)
  root = Path(out) / name
  final = root / h
  if final.is_dir() and not recompute:
    return read_run(name, config, out)
  check_writable_dir("out", root)
  partial = root / f"{h}.partial"
  partial.mkdir(exist_ok=True)
  ctx = Context(partial, progress=progress, chunk_steps=chunk_steps)
  with _precision(config):
    env = environment()
  t0 = time.perf_counter()
  try:
    with _compile_timer() as compile_s:
      results = compute(name, config, ctx)
  except Exception:
    if not any(partial.iterdir()):  # rejected before any checkpoint: leave nothing behind (a killed run resumes)
      partial.rmdir()
    raise
  wall = time.perf_counter() - t0
  meta = dict(env, experiment=name, config_hash=h, wall_time_s=round(wall, 3),
              compile_time_s=round(compile_s["s"], 3), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              convergence=convergence(results))
  tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{h}.tmp-"))
  try:
    _write_json(tmp / "config.json", config_dict(config))
    save_results(results, tmp)
    _write_json(tmp / "meta.json", meta)
    if final.is_dir():  # recompute: swap in the new run, then drop the old one
      old = Path(tempfile.mkdtemp(dir=root, prefix=f".{h}.old-"))
      os.replace(final, old / "run")
      os.replace(tmp, final)
      shutil.rmtree(old, ignore_errors=True)
    else:
      try:
        os.rename(tmp, final)
      except OSError:  # another process stored the same configuration meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return read_run(name, config, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  shutil.rmtree(partial, ignore_errors=True)
  return RunRecord(path=final, results=results, config=config, meta=meta, reused=False)


def figure_paths(name: str, directory: str | os.PathLike) -> list[Path]:
  """``directory/NAME.png`` and ``directory/NAME.pdf``."""
  return [Path(directory) / f"{name}.{ext}" for ext in ("png", "pdf")]


def save_figure(fig, name: str, directories) -> list[Path]:
  """Saves ``fig`` as PNG (150 dpi) and PDF into each directory (atomically); returns the paths."""
  paths = []
  for directory in directories:
    Path(directory).mkdir(parents=True, exist_ok=True)
    for path in figure_paths(name, directory):
      fmt = path.suffix[1:]
      atomic_write(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=150, bbox_inches="tight",
                                                         metadata={"Software": None} if fmt == "png"
                                                         else {"CreationDate": None}))
      paths.append(path)
  return paths


def default_figures_dir() -> Path:
  """``figures/`` of the source checkout (where this package lives), else ``./figures``."""
  return _REPO / "figures" if (_REPO / "pyproject.toml").exists() else Path("figures")
