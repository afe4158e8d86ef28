r"""The language-model regime in the UFM: ``K >> d`` classes with Zipfian counts; GNC2, UNC3, CDNV vs training and d.

Wu & Papyan (2024, "Linguistic Collapse", arXiv 2405.17767) track, in causal language models whose
vocabulary is the class set (``K >> d``, Zipf-distributed token counts), hyperspherical uniformity
(GNC2), uniform duality (UNC3) and the class-distance normalised variance (CDNV) over training and
model size, finding that they improve with both. This experiment asks the same of the spherical
temperature-scaled CE-UFM (:mod:`ufm.spherical`; Jiang et al. 2024, arXiv 2310.05351): ``K`` classes
with counts :func:`ufm.tiled.zipf_counts`, feature dimensions ``dims`` (a Python loop), Riemannian
gradient descent with ``num_seeds`` seeds vmapped; the three metrics (derivations §0.3, as
:mod:`ufm.metrics` defines them) are traced every ``log_every`` steps, and the final values are
recomputed with the tiled metrics of :mod:`ufm.tiled` (memory linear in ``K``; their largest
difference from the untiled values is stored as ``tiled_max_abs_diff``).
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common, runner
from ufm import spherical, tiled

PAPER = "Wu & Papyan 2024 (Linguistic Collapse); Jiang et al. 2024"
FIGURE = "new (UFM analogue of Wu & Papyan 2024's language-model measurements)"
RUNTIME = "621 s wall (load ~8, 2 cores shared with other jobs; 189 s CPU)"

TRACE_METRICS = ("gnc2", "unc3", "cdnv", "nc1_ratio")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 512, Zipf counts n_k = max(2, floor(20/(k+1))) (N = 1060), d = 4, 8, 16, 32, tau = 0.1, 2 seeds,
  4000 steps logged every 100. ``"smoke"``: K = 24, d = 3, 2 seeds, 20 steps."""
  c = ml_collections.ConfigDict()
  c.K, c.n_max, c.zipf_a = 512, 20, 1.0
  # At least 2 samples per class: with floor(20/(k+1)) alone 502 of the 512 classes have one sample, no within-class
  # spread, and NC1 and CDNV would be measured over the 10 classes that have more.
  c.n_min = 2
  c.dims = (4, 8, 16, 32)
  c.tau = 0.1
  c.seed, c.num_seeds = 0, 2
  c.lr, c.momentum, c.num_steps, c.log_every = 0.05, 0.9, 4000, 100
  c.block = 128
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.K, c.n_max, c.dims, c.num_steps, c.log_every, c.block = 24, 4, (3,), 20, 10, 8
  return c



def run(c, ctx) -> xr.Dataset:
  """Dims ``(d, seed, step)`` for the traces, ``(d, seed)`` for the final tiled metrics."""
  n_min = _common.check_int("n_min", c.n_min, lo=1)
  counts = tuple(int(v) for v in np.maximum(np.asarray(tiled.zipf_counts(c.K, n_max=c.n_max, a=c.zipf_a)), n_min))
  dims = tuple(_common.check_int("dims[i]", d, lo=2) for d in c.dims)
  if not dims:
    raise ValueError("dims is empty; allowed: a non-empty tuple of integers >= 2")
  _common.check_steps(c)
  block = _common.check_int("block", c.block)
  dt = _common.dtype(c)
  problems = {d: spherical.make_spherical_problem(counts, d=d, tau=c.tau, dtype=dt) for d in dims}
  hp = _common.gd_hparams(c)
  parts = []
  for d, p in problems.items():
    res = ctx.sweep(f"zipf_many_class[d={d}]", ufm.gradient_descent, p, hp, axes=ctx.axes, num_steps=c.num_steps,
                    log_every=c.log_every, trace_metrics=TRACE_METRICS)
    ds = _common.sweep_dataset(res, log_every=c.log_every)
    fin = jax.vmap(lambda P, p=p: tiled.compute(P, p, TRACE_METRICS, block=block))(res.solution.params)
    for k in TRACE_METRICS:
      ds[f"final_{k}"] = ("seed", np.asarray(fin[k]))
    ds["tiled_max_abs_diff"] = ("seed", np.max(np.stack([np.abs(np.asarray(fin[k]) - ds[f"trace_{k}"].values[:, -1])
                                                         for k in TRACE_METRICS]), axis=0))
    parts.append(ds)
  out = xr.concat(parts, dim=xr.DataArray(list(dims), dims="d", name="d"))
  out.attrs.update(K=c.K, N=sum(counts), n_max=c.n_max, zipf_a=c.zipf_a, tau=c.tau, n_min=min(counts))
  return out


_FINAL = ("gnc2", "unc3", "cdnv", "nc1_ratio")


def summary(results: xr.Dataset, c) -> dict:
  """Per d: how many seeds converged, the largest gradient norm left, and the final metrics (mean over seeds)."""
  a = results.attrs
  out = {"K": int(a["K"]), "N": int(a["N"]), "n_min": int(a["n_min"]), "tau": float(a["tau"]),
         "steps": int(results.step.values[-1]), "seeds": int(results.sizes["seed"]), "dims": []}
  for d in results.d.values:
    r = results.sel(d=d)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    row = {"d": int(d), "converged": int(ok.sum()), "grad_max": float(r.grad_norm.values.max())}
    row.update({k: float(r[f"final_{k}"].values.mean()) for k in _FINAL})
    out["dims"].append(row)
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  D = summary["dims"]
  trend = lambda k: ("decreases" if all(a[k] > b[k] for a, b in zip(D, D[1:])) else
                     "increases" if all(a[k] < b[k] for a, b in zip(D, D[1:])) else "is not monotone")
  rows = "; ".join(f"d = {R['d']}: {R['converged']}/{summary['seeds']} converged (largest |∇f| {R['grad_max']:.0e}), "
                   f"GNC2 {R['gnc2']:.4f}, UNC3 {R['unc3']:.1e}, CDNV {R['cdnv']:.1e}, tr Σ_W/tr Σ_B "
                   f"{R['nc1_ratio']:.1e}" for R in D)
  return (f"{FIGURE}: spherical CE-UFM, K = {summary['K']} classes with Zipf counts floored at {summary['n_min']} "
          f"(N = {summary['N']}), τ = {summary['tau']:g}, {summary['steps']:,} Riemannian GD steps, "
          f"{summary['seeds']} seeds; training curves over a fixed budget: a run that has not converged shows where "
          f"training is, not a limit. Final values (mean over seeds) — {rows}. Across d, the final GNC2 "
          f"{trend('gnc2')} with d, UNC3 {trend('unc3')}, CDNV {trend('cdnv')}.")


def plot(results: xr.Dataset, c):
  """GNC2, UNC3, CDNV and the NC1 ratio against the step (mean and min-max over seeds), one colour and line style per
  d. Every run is drawn (the figure is about training over a fixed budget); the title says which converged."""
  from matplotlib import pyplot as plt
  cols = (("gnc2", "GNC2 (lower = more uniform)", False), ("unc3", "UNC3 (CoV of cos(w_k, mu_k))", True),
          ("cdnv", "CDNV", True), ("nc1_ratio", r"tr$\Sigma_W$/tr$\Sigma_B$", True))
  fig, axs = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.8), squeeze=False, constrained_layout=True)
  x = results.step.values
  status = []
  for i, d in enumerate(results.d.values):
    r = results.sel(d=d)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    status.append(f"d={d}: {int(ok.sum())}/{ok.size}")
    style = dict(_common.STYLES[i % len(_common.STYLES)], markevery=0.15, ms=4)
    for ax, (var, title, logy) in zip(axs[0], cols):
      _common.spread(ax, x, r[f"trace_{var}"].values, color=f"C{i}", label=f"d={d}", logy=logy, floor=1e-16, **style)
      ax.set(xscale="log", yscale="log" if logy else "linear", xlabel="step", title=title)
  axs[0][0].legend(fontsize=8)
  a = results.attrs
  fig.suptitle(f"Spherical CE-UFM, K={a['K']} classes, Zipf counts (a={a['zipf_a']:g}, n_max={a['n_max']}, floored at "
               f"{a['n_min']}, N={a['N']}), tau={a['tau']:g}, {results.sizes['seed']} seeds; final values recomputed "
               f"tiled (max |tiled - untiled| = {float(results.tiled_max_abs_diff.max()):.1e}).\nConverged seeds "
               f"(|∇f| ≤ gtol) after {int(x[-1])} steps: " + ", ".join(status)
               + "; curves of unconverged runs show training over the budget, not limits", fontsize=10)
  return fig
