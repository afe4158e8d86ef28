r"""ETF emergence: NC1–NC4, the objective and the norms along gradient descent, against the closed forms.

Balanced UFM, CE and MSE, with and without an (unregularised) bias; full-batch gradient descent
with heavy-ball momentum from small Gaussian initialisations, ``num_seeds`` seeds vmapped per
setting. Each panel shows the mean over seeds (line) and the min–max band; dashed lines are the
closed-form limits of :func:`ufm.theory.predict`: the optimal objective (the gap is plotted
relative to it), :math:`\|W\|_F^2`, and the non-zero NC-metric targets (every NC metric tends to 0
for a simplex ETF; for the orthogonal frame of bias-free MSE the ETF error of ``W`` and the
self-duality of ``W`` against the centred means stay at the values :func:`ufm.theory.predict` gives).

Sources: Zhu et al. 2021, "A geometric analysis of neural collapse with unconstrained features"
(arXiv 2105.02375), Thm. 3.1 and the UFM training curves (Fig. 2); Zhou et al. 2022, "On the
optimization landscape of neural collapse under MSE loss" (arXiv 2203.01238), Thm. 3.1 and
Fig. 2; the bias-free MSE orthogonal frame: Tirer & Bruna 2022 (arXiv 2202.08087), Thm. 2.
"""

import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common

PAPER = "Zhu et al. 2021; Zhou et al. 2022"
FIGURE = "Zhu Fig. 2, Zhou Fig. 2 (UFM)"
RUNTIME = "110 s"

#: Metrics recorded along the run (names of ufm.metrics.METRICS).
TRACE_METRICS = ("nc1", "etf_error_W", "etf_error_M", "self_duality", "nc4", "norm_W_sq", "norm_H_sq")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 10, n = 20, d = 32, lam_W = lam_H = 5e-4, 16 seeds, 20 000 steps. ``"smoke"``: K = 3, 2 settings, 2 seeds, 40 steps."""
  c = ml_collections.ConfigDict()
  c.settings = ("ce", "ce+bias", "mse", "mse+bias")
  c.K, c.n, c.d = 10, 20, 32
  c.lam_W, c.lam_H = 5e-4, 5e-4
  c.seed, c.num_seeds = 0, 16
  c.lr, c.momentum, c.init_scale = 0.5, 0.9, 0.1
  c.num_steps, c.log_every = 20_000, 20
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.K, c.n, c.d, c.num_seeds, c.num_steps, c.log_every = 3, 4, 4, 2, 40, 10
    c.settings = ("ce", "mse+bias")  # both losses, with and without bias; fewer programs to compile
  return c



def _problems(c) -> dict:
  settings = _common.check_settings(c.settings)
  return {s: ufm.make_problem(ufm.balanced_counts(c.K, c.n), d=c.d, lam_W=c.lam_W, lam_H=c.lam_H,
                              loss=_common.SETTINGS[s][0], bias=_common.SETTINGS[s][1], dtype=_common.dtype(c))
          for s in settings}


def run(c, ctx) -> xr.Dataset:
  """Dataset with dims ``(setting, seed, step)`` for the traces, ``(setting, seed)`` for final values,
  ``(setting,)`` for the predictions ``pred_*`` (NaN where the closed form fixes nothing)."""
  problems = _problems(c)  # validates everything before any compilation
  _common.check_steps(c)
  hp = _common.gd_hparams(c)
  parts, preds = [], []
  for s, problem in problems.items():
    res = ctx.sweep(f"etf_emergence[{s}]", ufm.gradient_descent, problem, hp, axes=ctx.axes, num_steps=c.num_steps,
                    log_every=c.log_every, trace_metrics=TRACE_METRICS)
    parts.append(_common.sweep_dataset(res, log_every=c.log_every))
    pred, p = _common.predicted(problem)
    preds.append({f"pred_{k}": pred.get(k, np.nan) for k in ("objective", "norm_W_sq", "norm_H_sq") + TRACE_METRICS})
    preds[-1]["geometry"] = p.geometry
  ds = xr.concat(parts, dim=xr.DataArray(list(problems), dims="setting", name="setting"))
  for k in preds[0]:
    ds[k] = ("setting", np.asarray([p[k] for p in preds]))
  ds.attrs.update(K=c.K, n=c.n, d=c.d, lam_W=c.lam_W, lam_H=c.lam_H)
  return ds


_PANELS = (("gap", r"$(f - f^\star)/|f^\star|$", None), ("nc1", r"NC1  $\mathrm{tr}(\Sigma_W\Sigma_B^+)/K$", "nc1"),
           ("etf_error_W", "NC2: ETF error of $W$", "etf_error_W"),
           ("etf_error_M", r"NC2: ETF error of $\bar H$", "etf_error_M"),
           ("self_duality", r"NC3: $\|W/\|W\| - \bar H^\top/\|\bar H\|\|^2$", "self_duality"),
           ("nc4", "NC4: fraction where NCC and classifier disagree", "nc4"), ("norm_W_sq", r"$\|W\|_F^2$", "norm_W_sq"))


def plot(results: xr.Dataset, c):
  """Two rows of panels: objective gap, NC1, NC2 of W and of the means, NC3, NC4, ||W||^2, and the legend."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(2, 4, figsize=(15, 6.6), constrained_layout=True)
  axs = axs.ravel()
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  x = results.step.values
  for i, s in enumerate(results.setting.values):
    r = results.sel(setting=s)
    col = colors[i % len(colors)]
    for ax, (key, title, var) in zip(axs, _PANELS):
      if key == "gap":
        f_star = float(r.pred_objective)
        Y = (r.trace_objective.values - f_star) / abs(f_star)
        _common.spread(ax, x, Y, color=col, label=f"{s} ({r.geometry.item()})", floor=1e-17)
      elif key == "nc4":
        _common.spread(ax, x, 1.0 - r.trace_nc4.values, color=col, label=s, floor=1e-4)
      else:
        _common.spread(ax, x, r[f"trace_{var}"].values, color=col, label=s, floor=1e-32)
        target = float(r[f"pred_{var}"])
        if np.isfinite(target) and target > 0:
          ax.axhline(target, color=col, ls="--", lw=1)
      ax.set_title(title, fontsize=9)
  for ax, (key, _, _) in zip(axs, _PANELS):
    ax.set(xscale="log", yscale="log", xlabel="step")
  handles, labels = axs[0].get_legend_handles_labels()
  axs[-1].axis("off")
  axs[-1].legend(handles, labels, loc="center", fontsize=9, title="setting (predicted geometry)")
  fig.suptitle(f"Balanced UFM, K={results.attrs['K']}, n={results.attrs['n']}, d={results.attrs['d']}, "
               f"$\\lambda_W$={results.attrs['lam_W']:g}, $\\lambda_H$={results.attrs['lam_H']:g}: mean and min–max "
               f"over {results.sizes['seed']} seeds; dashed: closed-form limit (where non-zero). "
               "Values below the axis floor are exactly 0.", fontsize=10)
  return fig
