"""Sweep planning: devices, batch width and chunk size of a sweep's configuration axis, from a memory budget.

A :class:`SweepPlan` says how :func:`ufm.sweep.sweep` runs the flat axis of its ``C`` configurations;
:func:`plan_sweep` returns the plan a sweep would run with (rules in its docstring): shard over the visible
devices, vmap ``batch`` configurations together (on a CPU up to 8, or the width a short timing of a gradient step
finds fastest), and put as many configurations per call as fit the memory budget (from the compiled program's
``memory_analysis()``).
"""

import functools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.io import atomic_write
from ufm.problem import ProblemLike
from ufm.solvers import canonicalise
from ufm.sweep._program import Task, mapped, nbytes
from ufm.sweep.axes import parse_axes

__all__ = ["MEMORY_FRACTION", "SweepPlan", "available_memory", "plan_sweep", "resolve_plan", "work_units"]


class SweepPlan(NamedTuple):
  """How :func:`ufm.sweep.sweep` runs the flat axis of its ``C`` configurations (the grid in row-major order).

  Attributes:
    devices: devices the configuration axis is sharded over (a 1-D mesh ``("config",)`` of the first
      ``devices`` of ``jax.devices()``); each runs ``ceil(C / devices)`` configurations.
    batch: configurations vmapped together on one device; ``lax.map`` runs a device's batches in sequence.
    chunk: configurations per device in one call of the compiled program (a multiple of ``batch``); sized
      so that a call fits the memory budget. Outputs go to the host between calls.
    plain: the whole grid as one nested-``vmap`` program (the unplanned sweep: one device, one batch, one call).
    source: ``"user"`` (given), ``"plain"`` (small sweep), ``"heuristic"``, ``"calibrated"`` (batch timed) or
      ``"cached"`` (batch from an earlier calibration in this process, or in an earlier one when the compilation
      cache of :mod:`ufm.cache` is on).
    bytes_per_config: estimated device memory per configuration of a call (0: not estimated, small sweep).
    budget: the device-memory budget per device the chunk was sized for (bytes).
  """
  devices: int
  batch: int
  chunk: int
  plain: bool = False
  source: str = "user"
  bytes_per_config: int = 0
  budget: int = 0


def available_memory(device=None) -> int:
  """Free memory of ``device`` (default: the first device) in bytes: the allocator's limit minus its use on
  an accelerator; ``MemAvailable`` of ``/proc/meminfo`` (else free physical pages) on a CPU."""
  device = device or jax.devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


#: Fraction of :func:`available_memory` a sweep plans to use by default.
MEMORY_FRACTION = 0.5
#: On a CPU, the widest batch the heuristic picks without timing (measured: batches of 8 beat both a loop and one
#: wide vmap at K = 10, d = 64, N = 1000).
_CPU_BATCH = 8
#: Calibrate the CPU batch width when configurations x steps x parameters exceeds this (a sweep of seconds).
_CALIBRATE_WORK = 1e9
_CALIBRATION: dict = {}


def _calibration_key(problem, hparams, per_device: int):
  leaves, treedef = jax.tree.flatten((problem, hparams))
  dev = jax.devices()[0]
  return (dev.platform, dev.device_kind, type(problem).__qualname__, str(treedef),
          tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in leaves), per_device)


def _calibrated_batch(problem, hparams, per_device: int) -> tuple[int, str]:
  """The batch width with the shortest time per configuration-step of a gradient step ``p - eta grad f(p)`` of
  ``problem``, timed for widths 1, 2, 4, ... <= min(64, ``per_device``) on one device, stopping once a width is
  1.5x slower than the best (cached per shape, dtype and backend).
  The gradient step is the hot loop of every first-order solver, for any problem class (``value``/``init``)."""
  key = _calibration_key(problem, hparams, per_device)
  if key in _CALIBRATION:
    return _CALIBRATION[key], "cached"
  stored = _stored_calibrations().get(repr(key))
  if isinstance(stored, int) and stored >= 1:  # an earlier process's choice: the same plan, the same programs
    _CALIBRATION[key] = stored
    return stored, "cached"
  grad = jax.grad(lambda params, problem: problem.value(params))
  init_scale = getattr(hparams, "init_scale", jnp.asarray(0.1, problem.dtype))
  times = {}
  for b in (1, 2, 4, 8, 16, 32, 64):
    if b > per_device:
      break

    @jax.jit
    def run(keys):
      params = jax.vmap(lambda k: problem.init(k, init_scale))(keys)
      step = lambda _, p: jax.tree.map(lambda x, g: x - 1e-3 * g, p, jax.vmap(grad, (0, None))(p, problem))
      return jax.lax.fori_loop(0, 10, step, params)

    keys = jax.random.split(jax.random.key(0), b)
    jax.block_until_ready(run(keys))
    best = math.inf
    for _ in range(2):
      t0 = time.perf_counter()
      jax.block_until_ready(run(keys))
      best = min(best, time.perf_counter() - t0)
    times[b] = best / b
    if times[b] > 1.5 * min(times.values()):
      break  # past the cache cliff: wider batches only get slower
  batch = min(times, key=times.get)
  _CALIBRATION[key] = batch
  _store_calibration(repr(key), batch)
  return batch, "calibrated"


def _calibration_file() -> Path | None:
  """Where calibrations persist: beside JAX's persistent compilation cache (:mod:`ufm.cache`), when it is on. A
  timing-based choice made afresh in every process would pick another batch width now and then, and so compile
  programs the cache holds under the old width; persisted, a warm run plans as the cold one did."""
  directory = jax.config.jax_compilation_cache_dir
  return Path(directory).parent / "ufm-sweep-calibration.json" if directory else None


def _stored_calibrations() -> dict:
  path = _calibration_file()
  if path is None or not path.is_file():
    return {}
  try:
    data = json.loads(path.read_text())
  except (OSError, ValueError):
    return {}
  return data.get(jax.__version__, {}) if isinstance(data, dict) else {}


def _store_calibration(key: str, batch: int) -> None:
  path = _calibration_file()
  if path is None:
    return
  try:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data = data if isinstance(data, dict) else {}
  except (OSError, ValueError):
    data = {}
  data.setdefault(jax.__version__, {})[key] = int(batch)
  try:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))
  except OSError:
    pass  # a cache: losing it costs a calibration, nothing else


def work_units(stepper, solver_kwargs) -> int:
  """Steps (GD) or iterations (L-BFGS) of one solve, for the calibration threshold (1 when unknown)."""
  if stepper is None:
    return int(solver_kwargs.get("num_steps", solver_kwargs.get("max_steps", 1)))
  return stepper.plan(**solver_kwargs).total


def _check_plan_int(name: str, value, lo: int, hi: int | None = None) -> int:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
  if not ok or value < lo or (hi is not None and value > hi):
    rng = f"integers {lo} <= {name} <= {hi}" if hi is not None else f"integers >= {lo}"
    raise ValueError(f"plan {name} = {value!r} is out of range; allowed: {rng}")
  return int(value)


def resolve_plan(plan, task: Task, values, carry_like, shared, *, memory_budget, units: int) -> SweepPlan:
  """Turns ``plan`` (``"auto"``, ``"plain"``, a :class:`SweepPlan` or a dict of some of its fields) into a
  full :class:`SweepPlan` for ``task`` (``carry_like``: abstract per-configuration inputs, leading grid axes)."""
  C = math.prod(len(v) for v in values)
  if isinstance(plan, str):
    if plan not in ("auto", "plain"):
      raise ValueError(f"plan = {plan!r}: allowed: 'auto', 'plain', a SweepPlan or a dict with keys devices, batch, "
                       "chunk")
    user = {}
  elif isinstance(plan, (SweepPlan, dict)):
    user = {k: v for k, v in (plan._asdict() if isinstance(plan, SweepPlan) else plan).items()
            if k in ("devices", "batch", "chunk") and v is not None}
    extra = set(plan) - set(SweepPlan._fields) if isinstance(plan, dict) else set()
    if extra:
      raise ValueError(f"plan has unknown keys {sorted(extra)}; allowed: devices, batch, chunk")
  else:
    raise ValueError(f"plan = {plan!r}: allowed: 'auto', 'plain', a SweepPlan or a dict with keys devices, batch, "
                     "chunk")
  if memory_budget is not None:
    memory_budget = _check_plan_int("memory_budget", memory_budget, 1)
  n_dev = len(jax.devices())
  devices = _check_plan_int("devices", user["devices"], 1, n_dev) if "devices" in user else min(n_dev, C)
  per_device = -(-C // devices)
  problem, hparams = shared[0], shared[1]
  on_cpu = jax.devices()[0].platform == "cpu"
  budget = memory_budget or int(MEMORY_FRACTION * available_memory() / (devices if on_cpu else 1))
  if jax.process_count() > 1:  # every process must run the same plan: process 0's budget, no timing
    from jax.experimental import multihost_utils  # noqa: PLC0415 -- multi-host only
    budget = int(multihost_utils.broadcast_one_to_all(np.int64(budget)))
  if plan == "plain":
    return SweepPlan(devices=1, batch=C, chunk=C, plain=True, source="user", budget=budget)
  if "batch" in user:
    batch, source = _check_plan_int("batch", user["batch"], 1), "user"
  elif not on_cpu or per_device <= _CPU_BATCH:
    batch, source = per_device, "heuristic"
  elif jax.process_count() > 1:  # a timing could differ between hosts, and their plans must agree
    batch, source = _CPU_BATCH, "heuristic"
  elif C * units * sum(np.size(x) for x in jax.tree.leaves(jax.eval_shape(
      lambda: problem.init(jax.random.key(0), jnp.asarray(1.0, problem.dtype))))) < _CALIBRATE_WORK:
    batch, source = _CPU_BATCH, "heuristic"
  else:
    batch, source = _calibrated_batch(problem, hparams, per_device)
  batch = min(batch, per_device)
  bytes_per_config = 0
  if "chunk" in user:
    chunk = _check_plan_int("chunk", user["chunk"], 1)
    if chunk % batch:
      raise ValueError(f"plan chunk = {chunk} is not a multiple of batch = {batch}; allowed: a multiple of batch")
  else:
    chunk, batch, bytes_per_config = _memory_chunk(task, values, carry_like, shared, batch=batch,
                                                   per_device=per_device, budget=budget, fixed_batch="batch" in user)
  chunk = min(chunk, -(-per_device // batch) * batch)
  plain = devices == 1 and batch >= C and chunk >= C
  return SweepPlan(devices=devices, batch=batch, chunk=chunk, plain=plain,
                   source="plain" if plain and source == "heuristic" else source, bytes_per_config=bytes_per_config,
                   budget=budget)


def _abstract_inputs(values, carry_like, n: int):
  """Abstract (vals, carry) of ``n`` configurations (leading axis ``n``; the carry's grid axes flattened)."""
  k = len(values)
  vals = tuple(jax.ShapeDtypeStruct((n,), np.asarray(v).dtype) for v in values)
  carry = jax.tree.map(lambda x: jax.ShapeDtypeStruct((n,) + x.shape[k:], x.dtype), carry_like)
  return vals, carry


_SCRATCH: dict = {}


def _scratch_bytes(task, vals_b, carry_b, shared_b, batch) -> int | None:
  """Scratch memory of the compiled program for one batch (``memory_analysis().temp_size_in_bytes``; ``None``
  where the backend does not report it), cached per task, shapes and batch (one compilation each)."""
  leaves, treedef = jax.tree.flatten((vals_b, carry_b, shared_b))
  key = (task, treedef, tuple((x.shape, str(x.dtype)) for x in leaves), batch)
  if key not in _SCRATCH:
    if len(_SCRATCH) >= 64:
      _SCRATCH.clear()
    stats = mapped.lower(vals_b, carry_b, shared_b, task=task, batch=batch, devices=1).compile().memory_analysis()
    _SCRATCH[key] = None if stats is None else int(stats.temp_size_in_bytes)
  return _SCRATCH[key]


def _memory_chunk(task, values, carry_like, shared, *, batch, per_device, budget, fixed_batch):
  """Configurations per device per call that fit ``budget``: ``temp(batch) + chunk * io`` with ``temp`` the
  scratch memory of the compiled program for one batch and ``io`` its input + output bytes per configuration
  (``memory_analysis()`` of the compiled program). Small sweeps (a generous shape-only estimate far below the
  budget) skip the compilation. Returns ``(chunk, batch, bytes_per_config)``; the batch may shrink to fit."""
  vals1, carry1 = _abstract_inputs(values, carry_like, 1)
  out1 = jax.eval_shape(functools.partial(mapped, task=task, batch=1, devices=1), vals1, carry1, shared)
  io = nbytes(out1) + nbytes(carry1) + nbytes(vals1)
  C = math.prod(len(v) for v in values)
  host = available_memory(jax.local_devices(backend="cpu")[0])
  if C * nbytes(out1) > MEMORY_FRACTION * host:  # the results themselves are gathered on the host
    raise ValueError(f"the sweep's results need about {C * nbytes(out1)} bytes ({C} configurations x "
                     f"{nbytes(out1)}), more than {MEMORY_FRACTION:g} of the host's available memory ({host} bytes); "
                     "allowed: fewer configurations per sweep call (split an axis), fewer trace rows (log_every)")
  if per_device * 16 * (io + nbytes(out1)) <= budget:  # everything fits many times over
    return -(-per_device // batch) * batch, batch, 0
  while True:
    vals_b, carry_b = _abstract_inputs(values, carry_like, batch)
    temp = _scratch_bytes(task, vals_b, carry_b, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), shared),
                          batch)
    temp = 8 * batch * io if temp is None else temp
    if temp + batch * io <= budget or batch == 1 or fixed_batch:
      break
    batch = max(1, batch // 2)
  if temp + batch * io > budget:
    raise ValueError(f"memory_budget = {budget} bytes is too small: one call of {batch} configuration(s) needs about "
                     f"{temp + batch * io} bytes; allowed: a budget of at least that (or a smaller plan batch)")
  chunk = max(batch, (budget - temp) // io // batch * batch)
  return int(chunk), batch, int(temp // batch + io)


def plan_sweep(solver: Callable, problem: ProblemLike, hparams: Any, *, axes: dict[str, Any], plan="auto",
               memory_budget: int | None = None, **solver_kwargs) -> SweepPlan:
  r"""The :class:`SweepPlan` that :func:`ufm.sweep.sweep` would run these arguments with (nothing is solved).

  Rules (``plan="auto"``; ``C`` configurations, ``D`` devices visible):

  * ``devices = min(D, C)``: the configuration axis is sharded over every visible device. On a CPU
    JAX shows one device unless asked for more before its backend starts
    (``jax.config.update("jax_num_cpu_devices", n)`` or
    ``XLA_FLAGS=--xla_force_host_platform_device_count=n``); one per core lets the cores run
    configurations side by side.
  * ``batch``: on an accelerator, every configuration of a device at once (one wide ``vmap``). On a CPU,
    up to 8 configurations per device take one ``vmap``; a larger sweep (configurations x steps x
    parameters >= 1e9) times a gradient step at widths 1, 2, 4, ..., 64 once per shape and backend
    and takes the fastest per configuration (a wide batch falls out of cache and runs slower than a
    loop there).
  * ``chunk``: as many configurations per call as fit ``memory_budget`` bytes per device (default
    :data:`MEMORY_FRACTION` of :func:`available_memory`, shared between the host devices of a CPU),
    from the compiled program's ``memory_analysis()``: scratch memory of one batch plus the inputs
    and outputs of each configuration. The batch halves until one batch fits; a budget too small for
    a single configuration raises ``ValueError``.

  ``plan`` overrides: ``"plain"`` (one nested-``vmap`` program, the unplanned sweep), or a
  :class:`SweepPlan` / a dict with any of ``devices``, ``batch``, ``chunk`` (the rest is planned).

  Raises:
    ValueError: as :func:`ufm.sweep.sweep`, and for plan fields out of range (``1 <= devices <= D``,
      ``batch >= 1``, ``chunk`` a positive multiple of ``batch``).
  """
  names, values, _, base_seed = parse_axes(problem, hparams, axes, 0)
  problem, hparams = canonicalise(problem, hparams)
  stepper = getattr(solver, "stepper", None)
  return resolve_plan(plan, Task("solve", solver, names, tuple(sorted(solver_kwargs.items()))), values, None,
                      (problem, hparams, base_seed), memory_budget=memory_budget,
                      units=work_units(stepper, solver_kwargs))
