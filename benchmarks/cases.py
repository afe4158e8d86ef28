r"""The six benchmark cases of ``python -m benchmarks``. Every speed figure is a ratio against a
baseline measured in the same run, with the absolute numbers beside it.

1. Sweep throughput on the synthetic setting of Dang et al. (2023, arXiv 2301.00437; derivations §7): MSE-UFM,
   K = 4, d = 64, n = 100, full-batch SGD with momentum 0.9, lr 0.1, init N(0, 0.1^2), lam = 5e-4, over
   16 seeds x 16 values of lam_H: the planned sweep (:func:`ufm.sweep.sweep`) against a Python loop of
   ufm's own jitted single solve and against the eager PyTorch loop (:mod:`benchmarks.torch_baseline`).
   Throughput (configurations x steps per second) is measured over fewer steps than the paper's 30 000
   (stated in the output) and is a rate: the 30 000-step times are extrapolated.
2. One large problem, K = 100, d = 512, n = 100 (N = 10 000), CE and MSE: time per gradient step and
   achieved FLOP/s (6 K d N per step: W H, G H^T, W^T G) against a large ``jnp.dot`` on the same machine.
3. The full NC metric set (:data:`ufm.metrics.METRICS`) at K = 1000, d = 512, N = 100 000 against the same
   formulas in NumPy (:mod:`benchmarks.numpy_metrics`): time, peak memory, agreement.
4. Compile time: first call against later calls (sweep, single solve, L-BFGS, metric set).
5. float32 against float64 on cases 1 and 2.
6. The sweep of case 1 sharded over 1 and over all devices: bitwise equality and speed-up.

**Rooflines.** Every case states the bound that limits it and the fraction of it reached: the time the case's
bytes need at the measured copy bandwidth (:func:`copy_bandwidth`, a jitted ``x + 1`` on a large array: one read
and one write per element) and the time its FLOPs need at the measured matmul peak (:func:`matmul_peak`), the
larger of the two being the roofline time; ``roofline_fraction`` = roofline time / measured time (1 = at the bound).
Bytes counted per gradient step (the least a step must move): read and write ``H`` and its momentum, the same for
``W`` (``4 (dN + Kd)`` elements), and write and read the ``K x N`` logits once (``2 KN``); FLOPs: ``6 K d N``.
"""

import functools
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

import ufm
from ufm import metrics
from ufm import sweep as sw
from ufm.solvers import GD_STEPPER, canonicalise

from benchmarks.numpy_metrics import numpy_metric_set
from benchmarks.torch_baseline import torch_rate

__all__ = ["CONFIGS", "case_compile", "case_large", "case_metrics", "case_sharded", "case_sweep", "copy_bandwidth",
           "large_config", "matmul_peak", "roofline", "step_bytes"]

#: Sizes of the full run and of ``--quick`` (the test suite's smoke run: tiny sizes, no timing claims).
CONFIGS = {
    "full": dict(
        sweep=dict(K=4, d=64, n=100, lam=5e-4, lr=0.1, momentum=0.9, init_scale=0.1, n_seed=16, n_lam=16,
                   steps=1000, log_every=100, loop_configs=8, torch_configs=2, torch_steps=300, paper_steps=30_000),
        large=dict(K=100, d=512, n=100, steps=30, matmul=2048),
        large_accelerator=dict(K=1000, d=1024, n=100, steps=30, matmul=8192),
        bandwidth_bytes=256 * 2**20,
        metrics=dict(K=1000, d=512, n=100),
        lbfgs_steps=50,
        dtypes=("float32", "float64"),
        losses=("ce", "mse"),
    ),
    "quick": dict(
        sweep=dict(K=4, d=8, n=5, lam=5e-4, lr=0.1, momentum=0.9, init_scale=0.1, n_seed=4, n_lam=4,
                   steps=20, log_every=10, loop_configs=2, torch_configs=1, torch_steps=10, paper_steps=30_000),
        large=dict(K=10, d=16, n=10, steps=5, matmul=128),
        large_accelerator=dict(K=10, d=16, n=10, steps=5, matmul=128),
        bandwidth_bytes=4 * 2**20,
        metrics=dict(K=20, d=16, n=10),
        lbfgs_steps=None,  # L-BFGS's compilation alone would exceed the smoke run's budget
        dtypes=("float32",),
        losses=("mse",),
    ),
}


def large_config(cfg: dict) -> dict:
  """Case 2's size for this device: on a GPU or TPU one that fills it (K = 1000, d = 1024, N = 1e5, the size a
  language-model head reaches), on a CPU the smaller one (a CPU step at the large size takes seconds)."""
  return cfg["large"] if jax.default_backend() == "cpu" else cfg["large_accelerator"]


def step_bytes(K: int, d: int, N: int, itemsize: int) -> int:
  """The least bytes a heavy-ball gradient step moves: ``H``, ``W`` and their momenta read and written, the logits
  written and read once (module docstring)."""
  return itemsize * (4 * (d * N + K * d) + 2 * K * N)


def roofline(seconds: float, *, flops: float, nbytes: float, peak: float, bandwidth: float) -> dict:
  """The bound of a computation of ``flops`` FLOPs moving ``nbytes`` bytes, and the fraction of it reached in
  ``seconds``: ``roofline_seconds = max(flops / peak, nbytes / bandwidth)``."""
  t_compute, t_memory = flops / peak, nbytes / bandwidth
  bound = max(t_compute, t_memory)
  return dict(flops=flops, bytes=nbytes, compute_seconds=t_compute, memory_seconds=t_memory, roofline_seconds=bound,
              bound="compute" if t_compute >= t_memory else "memory", roofline_fraction=bound / seconds)


def copy_bandwidth(nbytes: int, dtype: str) -> dict:
  """Bytes per second of a jitted ``x + 1`` on an array of ``nbytes`` (one read and one write per element), the
  best of 5 after a warm-up."""
  dt = _dtype(dtype)
  x = jnp.zeros((nbytes // jnp.dtype(dt).itemsize,), dt)
  add = jax.jit(lambda x: x + 1)
  _block(add(x))
  t = min(_timed(add, x)[1] for _ in range(5))
  return dict(bytes=nbytes, dtype=dtype, seconds=t, bytes_per_second=2.0 * nbytes / t)


def _block(x):
  return jax.block_until_ready(x)


def _timed(fn, *args):
  t0 = time.perf_counter()
  out = _block(fn(*args))
  return out, time.perf_counter() - t0


def _dtype(name):
  return jnp.float64 if name == "float64" else jnp.float32


def _sweep_problem(c, dtype):
  dt = _dtype(dtype)
  p = ufm.make_problem(ufm.balanced_counts(c["K"], c["n"]), d=c["d"], lam_W=c["lam"], lam_H=c["lam"], loss="mse",
                       dtype=dt)
  hp = ufm.gd_hparams(c["lr"], momentum=c["momentum"], init_scale=c["init_scale"], dtype=dt)
  axes = {"lam_H": c["lam"] * np.logspace(-0.5, 0.5, c["n_lam"]), "seed": np.arange(c["n_seed"])}
  return p, hp, axes


def case_sweep(c: dict, dtype: str, peak: float | None = None, bandwidth: float | None = None) -> dict:
  """Case 1 (and its float32/float64 pair, case 5): planned sweep, loop of jitted solves, PyTorch; with ``peak``
  and ``bandwidth``, the sweep's roofline (per configuration-step: :func:`step_bytes`, ``6 K d N`` FLOPs)."""
  p, hp, axes = _sweep_problem(c, dtype)
  C, S = c["n_seed"] * c["n_lam"], c["steps"]
  kw = dict(num_steps=S, log_every=c["log_every"])
  t0 = time.perf_counter()
  plan = sw.plan_sweep(ufm.gradient_descent, p, hp, axes=axes, **kw)  # includes the (cached) calibration
  t_plan = time.perf_counter() - t0
  first, t_first = _timed(lambda: sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=plan, **kw).solution)
  res, t_sweep = _timed(lambda: sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=plan, **kw))
  # the loop baseline: ufm's own jitted single solve, one configuration after another (the first call compiles)
  lams, seeds = np.meshgrid(axes["lam_H"], axes["seed"], indexing="ij")
  solve = functools.partial(ufm.gradient_descent, hparams=hp, **kw)
  one = lambda i: solve(jax.random.key(int(seeds.flat[i])), p.replace(lam_H=jnp.asarray(lams.flat[i], p.dtype)))
  _, t_loop_first = _timed(one, 0)
  t0 = time.perf_counter()
  for i in range(1, 1 + c["loop_configs"]):
    _block(one(i))
  t_loop = time.perf_counter() - t0
  loop_rate = c["loop_configs"] * S / t_loop
  sweep_rate = C * S / t_sweep
  out = dict(dtype=dtype, configs=C, steps=S, paper_steps=c["paper_steps"], plan=plan._asdict(),
             plan_seconds=t_plan, sweep_seconds=t_sweep, sweep_first_call_seconds=t_first, sweep_rate=sweep_rate,
             loop_configs_timed=c["loop_configs"], loop_seconds=t_loop, loop_first_call_seconds=t_loop_first,
             loop_rate=loop_rate, sweep_vs_loop=sweep_rate / loop_rate,
             paper_sweep_seconds_extrapolated=C * c["paper_steps"] / sweep_rate,
             diverged=int(np.asarray(res.solution.diverged).sum()))
  if peak is not None and bandwidth is not None:
    N = c["K"] * c["n"]
    devices = plan.devices
    out["roofline"] = roofline(1.0 / sweep_rate, flops=6.0 * c["K"] * c["d"] * N,
                               nbytes=step_bytes(c["K"], c["d"], N, jnp.dtype(_dtype(dtype)).itemsize),
                               peak=peak * devices, bandwidth=bandwidth * devices)
    out["roofline"]["per"] = "configuration-step (all devices of the plan)"
  if dtype == "float32":
    tr = torch_rate(K=c["K"], d=c["d"], n=c["n"], lam=c["lam"], lr=c["lr"], momentum=c["momentum"],
                    init_scale=c["init_scale"], num_steps=c["torch_steps"], num_configs=c["torch_configs"],
                    device="cuda" if jax.default_backend() == "gpu" else "cpu")
    out["torch"] = tr
    out["sweep_vs_torch"] = sweep_rate / tr["rate"] if tr["available"] else None
  out["_result"] = res  # for case 6 (dropped from the JSON)
  return out


def case_sharded(c: dict, sweep_case: dict) -> dict:
  """Case 6: the sweep of case 1 (planned over every visible device) against the same plan on one device:
  bitwise equality of every output leaf, and the speed-up."""
  p, hp, axes = _sweep_problem(c, sweep_case["dtype"])
  kw = dict(num_steps=c["steps"], log_every=c["log_every"])
  ref = sweep_case["_result"]
  one_plan = dict(devices=1, batch=ref.plan.batch)
  _block(sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=one_plan, **kw).solution)  # compiles
  one, t_one = _timed(lambda: sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=one_plan, **kw))
  same = all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
             for a, b in zip(jax.tree.leaves(one.solution), jax.tree.leaves(ref.solution), strict=True))
  # timed back to back (the machine's load changes between cases): the sharded plan again, then one device again
  t_all = min(sweep_case["sweep_seconds"],
              _timed(lambda: sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=ref.plan, **kw).solution)[1])
  t_one = min(t_one, _timed(lambda: sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=one_plan, **kw).solution)[1])
  return dict(dtype=sweep_case["dtype"], devices=ref.plan.devices, batch=ref.plan.batch, one_device_seconds=t_one, all_devices_seconds=t_all,
              speedup=t_one / t_all, identical=bool(same),
              note=None if ref.plan.devices > 1 else "one device visible: the sharded plan is the one-device plan")


_gd_init = jax.jit(functools.partial(GD_STEPPER.init, optimizer="sgd"))


@functools.partial(jax.jit, static_argnums=3)
def _gd_chunk(state, p, hp, steps):
  """``steps`` steps of heavy-ball gradient descent (the solver's own loop), then one objective and gradient."""
  return GD_STEPPER.advance(state, p, hp, optimizer="sgd", num_chunks=1, log_every=steps, trace_metrics=())


@functools.partial(jax.jit, static_argnums=3)
def _matmul_steps(W, H, Y, steps):
  """``steps`` iterations of the three products of a gradient step alone (logits ``W H``, then ``G H^T`` and
  ``W^T G`` with ``G = W H - Y``), each feeding the next so that none is skipped, in one program as the step loop
  is (a single small call would time the launch, not the products, on a GPU)."""
  def body(_, wh):
    W, H = wh
    G = W @ H - Y
    return W - 1e-6 * (G @ H.T), H - 1e-6 * (W.T @ G)
  return jax.lax.fori_loop(0, steps, body, (W, H))


def case_large(c: dict, dtype: str, loss: str, peak: float, bandwidth: float | None = None) -> dict:
  """Case 2: seconds per gradient step of one large problem, the fraction of the matmul peak reached, the share of
  the step the three products alone take (timed in a loop of the same length), and the step's roofline."""
  dt = _dtype(dtype)
  K, d, n, S = c["K"], c["d"], c["n"], c["steps"]
  N = K * n
  p = ufm.make_problem(ufm.balanced_counts(K, n), d=d, lam_W=5e-4, lam_H=5e-4, loss=loss, dtype=dt)
  hp = ufm.gd_hparams(0.1, momentum=0.9, init_scale=0.1, dtype=dt)
  p, hp = canonicalise(p, hp)
  state = _gd_init(jax.random.key(0), p, hp)
  _, t_first = _timed(_gd_chunk, state, p, hp, S)
  t = min(_timed(_gd_chunk, state, p, hp, S)[1] for _ in range(2))
  flops = 6.0 * K * d * N  # W H, G H^T, W^T G (the rest is O(K N + d N))
  per_step = t / S
  # where the time goes: the three matmuls of a step alone (same loop length), and XLA's count of FLOPs and bytes
  W, H = state.params.W, state.params.H
  _block(_matmul_steps(W, H, p.Y, S))
  t_mm = min(_timed(_matmul_steps, W, H, p.Y, S)[1] for _ in range(2)) / S
  cost = jax.jit(jax.grad(ufm.objective)).lower(state.params, p).compile().cost_analysis()
  cost = (cost[0] if isinstance(cost, list) else cost) or {}
  return dict(dtype=dtype, loss=loss, K=K, d=d, N=N, steps=S, seconds_per_step=per_step, first_call_seconds=t_first,
              flops_per_step=flops, flops_per_second=flops / per_step, peak_flops_per_second=peak,
              peak_fraction=flops / per_step / peak, matmul_only_seconds=t_mm, matmul_share=t_mm / per_step,
              xla_flops_per_gradient=cost.get("flops"), xla_bytes_per_gradient=cost.get("bytes accessed"),
              roofline=None if bandwidth is None else roofline(
                  per_step, flops=flops, nbytes=step_bytes(K, d, N, jnp.dtype(dt).itemsize), peak=peak,
                  bandwidth=bandwidth))


def matmul_peak(n: int, dtype: str) -> dict:
  """FLOP/s of one large ``jnp.dot`` (n x n by n x n), the best of 5 after a warm-up."""
  dt = _dtype(dtype)
  a = jax.random.normal(jax.random.key(0), (n, n), dt)
  b = jax.random.normal(jax.random.key(1), (n, n), dt)
  dot = jax.jit(jnp.dot)
  _block(dot(a, b))
  t = min(_timed(dot, a, b)[1] for _ in range(5))
  return dict(n=n, dtype=dtype, seconds=t, flops_per_second=2.0 * n**3 / t)


def _collapsed_params(K, d, n, dt):
  """Near-collapsed features (class means + 0.3 x noise) and a classifier aligned with the means."""
  kM, kH, kW = jax.random.split(jax.random.key(0), 3)
  M = jax.random.normal(kM, (d, K), dt)
  labels = np.repeat(np.arange(K), n)
  H = M[:, labels] + 0.3 * jax.random.normal(kH, (d, K * n), dt)
  W = M.T + 0.1 * jax.random.normal(kW, (K, d), dt)
  return ufm.Params(W=W, H=H, b=jnp.zeros((K,), dt)), labels


def case_metrics(c: dict, bandwidth: float | None = None) -> dict:
  """Case 3: the full metric set, jitted ufm against NumPy (float64): time, peak memory, agreement; its roofline is
  the time to read ``H`` once at ``bandwidth`` (float64; the least any metric set must do)."""
  K, d, n = c["K"], c["d"], c["n"]
  p = ufm.make_problem(ufm.balanced_counts(K, n), d=d, lam_W=5e-4, lam_H=5e-4, loss="ce", dtype=jnp.float64)
  params, labels = _collapsed_params(K, d, n, jnp.float64)
  t0 = time.perf_counter()
  fn = jax.jit(lambda params: metrics.compute(params, p)).lower(params).compile()
  _block(fn(params))
  t_first = time.perf_counter() - t0  # trace + compile + first run
  mem = fn.memory_analysis()
  peak_ufm = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
  ours, t_ufm = _timed(fn, params)
  t_ufm = min(t_ufm, _timed(fn, params)[1])
  W, H, b = (np.asarray(x) for x in params)
  tracemalloc.start()
  t0 = time.perf_counter()
  ref = numpy_metric_set(W, H, b, labels, K, bias=False)
  t_np = time.perf_counter() - t0
  peak_np = tracemalloc.get_traced_memory()[1] + W.nbytes + H.nbytes
  tracemalloc.stop()
  rel = max(abs(float(ours[k]) - float(ref[k])) / max(abs(float(ref[k])), 1e-300) for k in ref)
  itemsize = 8
  return dict(K=K, d=d, N=K * n, dtype="float64", metrics=len(ref), ufm_seconds=t_ufm, ufm_first_call_seconds=t_first,
              numpy_seconds=t_np, numpy_vs_ufm=t_np / t_ufm, ufm_peak_bytes=peak_ufm, numpy_peak_bytes=int(peak_np),
              ufm_peak_over_dN_plus_KN=peak_ufm / (itemsize * (d * K * n + K * K * n)),
              K2d2_bytes=itemsize * K**2 * d**2, max_relative_difference=rel,
              roofline=None if bandwidth is None else roofline(t_ufm, flops=0.0, nbytes=itemsize * d * K * n,
                                                               peak=1.0, bandwidth=bandwidth))


def case_compile(cfg: dict, sweep_case: dict, metrics_case: dict) -> dict:
  """Case 4: first call (trace + compile + run) against a later call, for the sweep, the single solve, L-BFGS
  and the metric set (the first two from case 1, the metric set from case 3; L-BFGS here)."""
  c = cfg["sweep"]
  p, _, _ = _sweep_problem(c, "float64")
  hp = ufm.lbfgs_hparams()
  lbfgs = None
  if cfg["lbfgs_steps"] is not None:
    run = lambda k: ufm.lbfgs_reference(jax.random.key(k), p, hp, max_steps=cfg["lbfgs_steps"])
    lbfgs = dict(first=_timed(run, 0)[1], later=_timed(run, 1)[1])
  s = sweep_case
  loop_call = s["loop_seconds"] / s["loop_configs_timed"]
  return {
      "sweep (gradient_descent, vmapped)": dict(first=s["sweep_first_call_seconds"], later=s["sweep_seconds"]),
      "gradient_descent (one solve)": dict(first=s["loop_first_call_seconds"], later=loop_call),
      "lbfgs_reference (one solve)": lbfgs,
      "metric set (all METRICS)": dict(first=metrics_case["ufm_first_call_seconds"], later=metrics_case["ufm_seconds"]),
  }
