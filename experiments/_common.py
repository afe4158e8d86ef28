"""Helpers shared by the experiment modules: validation, settings, datasets, plotting."""

import numpy as np
import xarray as xr

import jax.numpy as jnp
import ufm
from ufm import validate
from experiments.runner import seeds  # noqa: F401 -- re-exported: the seed axis for modules whose sweep adds one

#: Setting label -> (loss, bias) for the four balanced UFM variants.
SETTINGS = {"ce": ("ce", False), "ce+bias": ("ce", True), "mse": ("mse", False), "mse+bias": ("mse", True)}


def dtype(config):
  """float64 when ``config.x64`` (the CLI then enables ``jax_enable_x64``), else float32."""
  return jnp.float64 if config.x64 else jnp.float32


def gd_hparams(c, **overrides) -> "ufm.GDHparams":
  """:func:`ufm.gd_hparams` from the configuration's ``lr`` and, where it has them, ``momentum`` and
  ``init_scale``, in :func:`dtype` (``overrides`` win)."""
  kw = {k: c[k] for k in ("lr", "momentum", "init_scale") if k in c}
  kw.update(dtype=dtype(c), **overrides)
  return ufm.gd_hparams(kw.pop("lr"), **kw)


def variant(arg, allowed=("smoke",)):
  """The configuration variant named by ``arg`` (``None`` is the full configuration); ``ValueError`` naming the
  allowed variants otherwise. Every module's ``get_config`` starts with it."""
  if arg is not None and arg not in allowed:
    raise ValueError(f"unknown config variant {arg!r}; allowed: {', '.join(allowed)}")
  return arg


def check_int(name: str, value, lo: int = 1, hi: int | None = None) -> int:
  """``value`` as an int in ``[lo, hi]`` (:func:`ufm.validate.check_int` plus an upper bound); ``ValueError``
  naming ``name`` and the range otherwise."""
  value = validate.check_int(name, value, lo=lo)
  if hi is not None and value > hi:
    raise ValueError(f"{name} = {value!r} is out of range; allowed range: integers in [{lo}, {hi}]")
  return value


def positive(name: str, values) -> np.ndarray:
  """``values`` as a non-empty 1-D float64 array of finite numbers > 0 (a vmapped axis); ``ValueError`` naming
  config key ``name`` otherwise."""
  arr = validate.check_real(name, values, lo=0.0, lo_open=True)
  if arr.ndim != 1 or arr.size == 0:
    raise ValueError(f"{name} = {values!r}: allowed: a non-empty tuple of numbers > 0")
  return arr


def log_grid(c, lo: str, hi: str, num: str, *, min_num: int = 1, decreasing: bool = False) -> np.ndarray:
  """``geomspace(c[lo], c[hi], c[num])`` (reversed when ``decreasing``) with ``0 < c[lo] <= c[hi]`` and
  ``c[num] >= min_num`` checked first; ``ValueError`` naming the offending key otherwise."""
  a = float(validate.check_real(lo, c[lo], lo=0.0, lo_open=True))
  b = float(validate.check_real(hi, c[hi], lo=a))
  grid = np.geomspace(a, b, check_int(num, c[num], lo=min_num))
  return grid[::-1] if decreasing else grid


def check_steps(config):
  """``num_steps`` a positive multiple of ``log_every`` (at most 10^7 steps)."""
  check_int("log_every", config.log_every)
  check_int("num_steps", config.num_steps, hi=10**7)
  if config.num_steps % config.log_every:
    raise ValueError(f"num_steps = {config.num_steps}, log_every = {config.log_every}: allowed: num_steps a "
                     "multiple of log_every")


def check_settings(names, allowed=SETTINGS, *, key: str = "settings") -> tuple[str, ...]:
  """``names`` as a tuple of distinct members of ``allowed``; ``ValueError`` naming config ``key`` otherwise."""
  names = tuple(names)
  bad = [s for s in names if s not in allowed]
  if bad or not names or len(set(names)) != len(names):
    raise ValueError(f"{key} = {names!r}: allowed: a non-empty tuple of distinct values among {', '.join(allowed)}")
  return names


def sweep_dataset(res: ufm.sweep.SweepResult, *, log_every: int | None = None) -> xr.Dataset:
  """Final values (dims = the sweep's axes) and, given ``log_every``, the gradient-descent trace rows
  (dims = axes + ``step``; coordinate ``step = log_every * (1, 2, ...)``; ``trace_step`` holds the steps
  actually taken, which stop growing at divergence)."""
  sol, axes = res.solution, res.axes
  data = {
      "objective": (axes, np.asarray(sol.objective)),
      "grad_norm": (axes, np.asarray(sol.grad_norm)),
      "diverged": (axes, np.asarray(sol.diverged)),
      "converged": (axes, np.asarray(sol.converged)),
      "num_steps": (axes, np.asarray(sol.num_steps)),
  }
  coords = {a: np.asarray(res.coords[a]) for a in axes}
  if log_every is not None:
    tr = sol.trace
    dims = axes + ("step",)
    data["trace_objective"] = (dims, np.asarray(tr.objective))
    data["trace_grad_norm"] = (dims, np.asarray(tr.grad_norm))
    data["trace_step"] = (dims, np.asarray(tr.step))
    for name, v in tr.metrics.items():
      data[f"trace_{name}"] = (dims, np.asarray(v))
    coords["step"] = log_every * np.arange(1, np.shape(tr.objective)[-1] + 1)
  return xr.Dataset(data, coords=coords)


def final_metrics(res: ufm.sweep.SweepResult, problem, names) -> dict:
  """NC metrics of the final iterates, vmapped over every sweep axis (dims = the sweep's axes)."""
  import jax
  fn = lambda p: ufm.metrics.compute(p, problem, names)
  for _ in res.axes:
    fn = jax.vmap(fn)
  out = fn(res.solution.params)
  return {k: (res.axes, np.asarray(v)) for k, v in out.items()}


def predicted(problem) -> tuple[dict, "ufm.theory.Prediction"]:
  """``ufm.theory.predict`` as plain floats (objective, norms, every fixed NC-metric target), and the prediction."""
  p = ufm.theory.predict(problem)
  out = {"objective": p.objective, "norm_W_sq": p.norm_W_sq, "norm_H_sq": p.norm_H_sq, "norm_b": p.norm_b}
  out.update(p.metrics)
  return {k: float(v) for k, v in out.items()}, p


def spread(ax, x, Y, *, color, label, logy=True, floor=1e-300, **line):
  """Mean over the leading axis as a line and the min-max band over it (the spread over seeds); ``line`` goes to
  ``ax.plot`` (line style, markers: what tells overlapping settings apart)."""
  Y = np.asarray(Y, np.float64).reshape(-1, np.shape(Y)[-1])
  if not Y.shape[0]:
    return
  if logy:
    Y = np.maximum(Y, floor)
  ax.plot(x, Y.mean(0), color=color, label=label, **{"lw": 1.5, **line})
  ax.fill_between(x, Y.min(0), Y.max(0), color=color, alpha=0.25, lw=0)


#: Line styles and markers that tell up to four overlapping curves apart (in print and for colour-blind readers).
STYLES = ({"ls": "-", "marker": "o"}, {"ls": "--", "marker": "s"}, {"ls": "-.", "marker": "^"},
          {"ls": ":", "marker": "v"})
