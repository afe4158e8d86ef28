r"""GNC2 (hyperspherical uniformity) against ``K/d``: the spherical CE-UFM beside the minimal log-energy bound.

For ``K <= d + 1`` the class means of the spherical CE-UFM form a simplex ETF and GNC2 equals
:math:`-\frac12\log\frac{2K}{K-1}` (derivations §0.3); past ``K = d + 1`` no ETF exists and GNC2 is bounded
below by the minimal logarithmic energy of ``K`` points on :math:`S^{d-1}` divided by the number of pairs
(:func:`ufm.geometry.minimal_energy` with ``s = 0``, best of ``num_restarts`` vmapped restarts). GNC2 of
the learned centred class means (Wu & Papyan 2024, arXiv 2405.17767; Liu et al. 2023, arXiv 2303.06484)
and of the classifier rows is plotted against ``K/d`` with both references; the gap measures how far
the softmax-code geometry that CE selects (Jiang et al. 2024, arXiv 2310.05351) is from the most uniform one.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common, runner
from ufm import geometry, spherical

PAPER = "Wu & Papyan 2024; Liu et al. 2023; Jiang et al. 2024"
FIGURE = "new (UFM analogue of Wu & Papyan 2024's GNC2 measurements on language models)"
RUNTIME = "226 s wall (load ~10, 2 cores shared with other jobs; 86 s CPU)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: d = 2, 4, 8; K/d-ratios giving K = d+1, 2d, 4d, 8d; n = 1; tau = 0.2; 4 seeds; 10 000 steps; 6 restarts.
  ``"smoke"``: d = 2, K = 3 only (one shape); 2 seeds; 20 steps."""
  c = ml_collections.ConfigDict()
  c.dims = (2, 4, 8)
  c.multiples = (2, 4, 8)  # K = m d, besides K = d + 1
  c.n = 1
  c.tau = 0.2
  c.seed, c.num_seeds = 0, 4
  # 10 000 steps at gtol 1e-9: the learned-vs-minimal-energy gaps are 1e-5..1e-4, so a run counts only once its
  # gradient norm says it has stopped moving (4000 steps and no gradient check were not evidence enough).
  c.lr, c.momentum, c.num_steps, c.gtol = 0.1, 0.9, 10_000, 1e-9
  c.num_restarts, c.energy_steps = 6, 3000
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.dims, c.multiples, c.num_seeds, c.num_steps, c.num_restarts, c.energy_steps = (2,), (), 2, 20, 2, 10
  return c



def _shapes(c):
  dims = tuple(_common.check_int("dims[i]", d, lo=2) for d in c.dims)
  mults = tuple(_common.check_int("multiples[i]", m, lo=2) for m in c.multiples)
  if not dims:
    raise ValueError("dims is empty; allowed: a non-empty tuple of integers >= 2 (multiples may be empty)")
  return [(d, K) for d in dims for K in sorted({d + 1, *(m * d for m in mults)})]


@jax.jit
def _gnc2_pair(params_W, params_H, labels):
  """GNC2 of the centred class means and of the classifier rows (vmapped over seeds by the caller)."""
  K = params_W.shape[0]
  M = ufm.metrics.class_means(params_H, labels, K)[0]
  return ufm.metrics.gnc2(M - params_H.mean(axis=1, keepdims=True)), ufm.metrics.gnc2(params_W.T)


def run(c, ctx) -> xr.Dataset:
  """Dims ``(shape, seed)`` for the learned GNC2 values, ``(shape,)`` for the references."""
  shapes = _shapes(c)
  _common.check_int("num_steps", c.num_steps, hi=10**7)
  dt = _common.dtype(c)
  problems = [spherical.make_spherical_problem(ufm.balanced_counts(K, _common.check_int("n", c.n)), d=d, tau=c.tau,
                                               dtype=dt) for d, K in shapes]
  hp = _common.gd_hparams(c, gtol=float(ufm.problem.check_real("gtol", c.gtol, lo=0.0, lo_open=True)))
  key = jax.random.key(int(c.seed))
  rows = {k: [] for k in ("gnc2_M", "gnc2_W", "objective", "diverged", "converged", "grad_norm", "energy_gnc2",
                          "energy_spread", "etf_gnc2")}
  for (d, K), p in zip(shapes, problems):
    res = ctx.sweep(f"kd_gnc2[d={d},K={K}]", ufm.gradient_descent, p, hp, axes=ctx.axes, num_steps=c.num_steps,
                    log_every=c.num_steps)
    gM, gW = jax.vmap(_gnc2_pair, in_axes=(0, 0, None))(res.solution.params.W, res.solution.params.H, p.labels)
    e = geometry.minimal_energy(jax.random.fold_in(key, 1000 * d + K), K, d, s=0.0, num_restarts=c.num_restarts,
                                num_steps=c.energy_steps, dtype=dt)
    P = K * (K - 1) / 2
    rows["gnc2_M"].append(np.asarray(gM))
    rows["gnc2_W"].append(np.asarray(gW))
    rows["objective"].append(np.asarray(res.solution.objective))
    rows["diverged"].append(np.asarray(res.solution.diverged))
    rows["converged"].append(np.asarray(res.solution.converged))
    rows["grad_norm"].append(np.asarray(res.solution.grad_norm))
    rows["energy_gnc2"].append(float(e.value) / P)
    rows["energy_spread"].append(float(e.spread) / P)
    rows["etf_gnc2"].append(-0.5 * np.log(2 * K / (K - 1)))
  data = {k: (("shape", "seed") if np.ndim(v[0]) else ("shape",), np.asarray(v)) for k, v in rows.items()}
  data["d"] = ("shape", np.asarray([d for d, _ in shapes]))
  data["K"] = ("shape", np.asarray([K for _, K in shapes]))
  ds = xr.Dataset(data, coords={"shape": [f"d={d},K={K}" for d, K in shapes], "seed": ctx.axes["seed"]})
  ds.attrs.update(n=c.n, tau=c.tau, num_steps=c.num_steps, num_restarts=c.num_restarts)
  return ds


def summary(results: xr.Dataset, c) -> dict:
  """Per shape, over the converged seeds: GNC2 of the learned means minus the best minimal energy found, the spread
  of the energy over its restarts, the largest gradient norm left; the ETF value where it is attainable."""
  out = {"tau": float(results.attrs["tau"]), "steps": int(results.attrs["num_steps"]), "seeds": int(results.sizes["seed"]),
         "restarts": int(results.attrs["num_restarts"]), "rows": []}
  for s in results.shape.values:
    r = results.sel(shape=s)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    gap = (r.gnc2_M.values - float(r.energy_gnc2))[ok]
    out["rows"].append({"shape": str(s), "d": int(r.d), "K": int(r.K), "converged": int(ok.sum()),
                        "grad_max": float(r.grad_norm.values.max()),
                        "gap_min": float(gap.min()) if gap.size else None,
                        "gap_max": float(gap.max()) if gap.size else None,
                        "energy_spread": float(r.energy_spread), "etf_gap": float(r.gnc2_M.values[ok].max()
                                                                                 - float(r.etf_gnc2))
                        if ok.any() else None})
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  rows = summary["rows"]
  conv = sum(R["converged"] for R in rows)
  etf = [R for R in rows if R["K"] <= R["d"] + 1]
  past = [R for R in rows if R["K"] > R["d"] + 1 and R["gap_min"] is not None]
  above = [R for R in past if R["gap_min"] > R["energy_spread"] and R["gap_min"] > 1e-12]
  txt = (f"{FIGURE}: spherical CE-UFM, τ = {summary['tau']:g}, n = 1, {summary['steps']:,} Riemannian GD steps at "
         f"gtol {c.gtol:g}, {summary['seeds']} seeds per shape; minimal log energy: best of {summary['restarts']} "
         f"restarts. {conv} of {summary['seeds'] * len(rows)} runs converged (the rest are left out). At K = d + 1 the "
         "learned means are at the simplex-ETF value to "
         + ", ".join(f"{R['etf_gap']:.0e} (d = {R['d']})" for R in etf if R["etf_gap"] is not None)
         + f". Past K = d + 1, GNC2(learned means) − GNC2(best minimal energy found) over the converged seeds: "
         + "; ".join(f"{R['shape']}: {R['gap_min']:.1e}..{R['gap_max']:.1e} (energy spread over restarts "
                     f"{R['energy_spread']:.1e})" for R in past)
         + f". In {len(above)} of {len(past)} shapes ({', '.join(R['shape'] for R in above) or 'none'}) every converged "
           "seed lies above the best energy found by more than the restarts' spread and 1e-12: there CE's minimiser is "
           "not the most uniform configuration (the best energy found is an upper bound on the minimum, so the gap is a "
           "lower bound)"
         + ("; elsewhere the two agree to 1e-12." if all(max(abs(R["gap_min"]), abs(R["gap_max"])) <= 1e-12
                                                     for R in past if R not in above) else ".")
         + ("" if not [R for R in rows if R["converged"] == 0] else
            " No converged seed (left out): " + ", ".join(f"{R['shape']} (largest |∇f| {R['grad_max']:.0e})"
                                                           for R in rows if R["converged"] == 0) + "."))
  return txt


def plot(results: xr.Dataset, c):
  """Top: GNC2 against K/d per d: learned means (dots, converged seeds) and classifiers (crosses), minimal log energy
  (line) and the ETF value (dashed; attainable only for K <= d + 1). Bottom: learned minus minimal-energy GNC2
  (symlog), with the spread of the energy over restarts as a band. Unconverged seeds are left out and counted."""
  from matplotlib import pyplot as plt
  from matplotlib.ticker import NullFormatter
  ds_ = sorted(set(results.d.values.tolist()))
  fig, axs = plt.subplots(2, len(ds_), figsize=(4.6 * len(ds_), 6.8), squeeze=False, constrained_layout=True)
  mask, note = runner.gate(results.converged.values, results.diverged.values)
  for ax, gap_ax, d in zip(axs[0], axs[1], ds_):
    sel = results.d.values == d
    r = results.isel(shape=np.flatnonzero(sel))
    ok = mask[sel]
    ratio = r.K.values / d
    o = np.argsort(ratio)
    e, sp = r.energy_gnc2.values[o], r.energy_spread.values[o]
    gM = np.where(ok, r.gnc2_M.values, np.nan)
    gW = np.where(ok, r.gnc2_W.values, np.nan)
    for j in range(r.sizes["seed"]):
      ax.scatter(ratio, gM[:, j], s=14, color="C0", label="learned means" if j == 0 else None)
      ax.scatter(ratio, gW[:, j], s=18, marker="x", color="C2", label="learned W" if j == 0 else None)
      gap_ax.scatter(ratio[o], gM[o, j] - e, s=14, color="C0", label="learned means" if j == 0 else None)
    ax.plot(ratio[o], e, color="C3", label="min log energy / pairs")
    ax.plot(ratio[o], r.etf_gnc2.values[o], color="k", ls="--", lw=1, label="simplex ETF value")
    gap_ax.vlines(ratio[o], 0 * sp, sp, color="C3", alpha=0.5, lw=6, label="energy spread over restarts")
    for a in (ax, gap_ax):
      a.axvline((d + 1) / d, color="0.6", lw=0.8, ls=":")
      a.set(xscale="log", xlabel="K / d")
      a.set_xticks(ratio[o], [f"{v:.3g}" for v in ratio[o]])  # the ratios themselves: no colliding labels
      a.xaxis.set_minor_formatter(NullFormatter())
    ax.set(ylabel="GNC2 (lower = more uniform)", title=f"d = {d}")
    gap_ax.set_yscale("symlog", linthresh=1e-8)
    gap_ax.set_ylim(-1e-6, 1e-3)
    gap_ax.set(ylabel="GNC2(learned) - GNC2(min energy)", title=f"d = {d}: gap to the most uniform configuration")
    ax.legend(fontsize=7)
    gap_ax.legend(fontsize=7, loc="upper left")
  fig.suptitle(f"Spherical CE-UFM, tau={results.attrs['tau']:g}, n={results.attrs['n']}, {results.attrs['num_steps']} "
               f"steps, {results.sizes['seed']} seeds; minimal energy: best of {results.attrs['num_restarts']} restarts; "
               "dotted: K = d + 1; " + (note or "every run converged"), fontsize=10)
  return fig
