r"""ETF emergence: NC1–NC4, the objective and the norms along gradient descent, against the closed forms.

Balanced UFM, CE and MSE, with and without an (unregularised) bias; full-batch gradient descent
with heavy-ball momentum from small Gaussian initialisations, ``num_seeds`` seeds vmapped per
setting. Each panel shows the mean over the converged seeds (line) and the min–max band; broad pale lines
are the closed-form limits of :func:`ufm.theory.predict`: the optimal objective (the gap is plotted
relative to it), :math:`\|W\|_F^2`, and the non-zero NC-metric targets (every NC metric tends to 0
for a simplex ETF; for the orthogonal frame of bias-free MSE the ETF error of ``W`` and the
self-duality of ``W`` against the centred means stay at the values :func:`ufm.theory.predict` gives).

What it is: a check of closed forms along gradient descent, not a reproduction of a paper's figure (neither
paper plots UFM training curves: Zhu et al.'s Fig. 2 is a schematic of the model, Zhou et al.'s Fig. 2 a landscape
over one feature's norm and angle; their NC-vs-epoch figures are of trained networks).

Sources: Zhu et al. 2021, "A geometric analysis of neural collapse with unconstrained features"
(arXiv 2105.02375), Thm. 3.1 (CE); Zhou et al. 2022, "On the optimization landscape of neural collapse
under MSE loss" (arXiv 2203.01238), Thm. 3.1 (MSE); the bias-free MSE orthogonal frame: Tirer & Bruna
2022 (arXiv 2202.08087), Thm. 3.1.
"""

import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, runner

PAPER = "Zhu et al. 2021; Zhou et al. 2022"
FIGURE = ("checks Zhu et al. 2021 Thm. 3.1, Zhou et al. 2022 Thm. 3.1 and Tirer & Bruna 2022 Thm. 3.1 along "
          "gradient descent (the curves are new)")
RUNTIME = "80 s wall (load ~1; compile 31 s)"

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


_PANELS = (("gap", r"objective gap $(f - f^\star)/|f^\star|$", None),
           ("nc1", r"NC1  $\mathrm{tr}(\Sigma_W\Sigma_B^+)/K$", "nc1"),
           ("etf_error_W", "NC2: ETF error of $W$", "etf_error_W"),
           ("etf_error_M", r"NC2: ETF error of the centred means $\bar H$", "etf_error_M"),
           ("self_duality", r"NC3: $\|W^\top/\|W\|_F - \bar H/\|\bar H\|_F\|_F$", "self_duality"),
           ("nc4", "NC4: fraction of samples where the nearest\nclass mean and the classifier disagree", "nc4"),
           ("norm_W_sq", r"$\|W\|_F^2$", "norm_W_sq"))


def _final(r, var):
  """The last logged value of trace ``var`` per seed."""
  return r[f"trace_{var}"].values[..., -1]


def _agg(fn, values):
  """``fn`` of the values as a float, ``None`` when there are none (no converged run)."""
  values = np.asarray(values)
  return float(fn(values)) if values.size else None


def _f(value, spec: str) -> str:
  """``value`` formatted, ``"n/a"`` for ``None``."""
  return "n/a" if value is None else format(value, spec)


def summary(results: xr.Dataset, c) -> dict:
  """What the figure's text quotes, per setting over its converged seeds: the largest final objective gap and
  NC metrics, the first logged step by which every seed is within 1e-12 of the closed-form objective, and the
  closed-form targets."""
  out = {"settings": {}}
  for s in results.setting.values:
    r = results.sel(setting=s)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    f_star = float(r.pred_objective)
    gap = np.abs(r.trace_objective.values[ok] - f_star) / abs(f_star)
    reached = np.all(gap <= 1e-12, axis=0)
    first = int(r.step.values[np.argmax(reached)]) if reached.any() else None
    row = {"geometry": str(r.geometry.item()), "runs": int(ok.size), "converged": int(ok.sum()),
           "gap": _agg(np.max, gap[:, -1]), "step_1e-12": first,
           "norm_W_sq_rel": _agg(np.max, np.abs(_final(r, "norm_W_sq")[ok] / float(r.pred_norm_W_sq) - 1))}
    for var in ("nc1", "etf_error_W", "etf_error_M", "self_duality"):
      row[var] = _agg(np.max, _final(r, var)[ok])
      row[f"pred_{var}"] = float(r[f"pred_{var}"])
    row["nc4_min"] = _agg(np.min, _final(r, "nc4")[ok])
    out["settings"][str(s)] = row
  out.update(K=int(results.attrs["K"]), n=int(results.attrs["n"]), d=int(results.attrs["d"]),
             lam_W=float(results.attrs["lam_W"]), lam_H=float(results.attrs["lam_H"]),
             seeds=int(results.sizes["seed"]), steps=int(results.step.values[-1]))
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  S = summary["settings"]
  names = list(S)
  etf = [s for s in names if S[s]["geometry"] == "simplex ETF"]
  frame = [s for s in names if s not in etf]

  def worst(key, among=names, fn=max):
    values = [S[s][key] for s in among if S[s][key] is not None]
    return fn(values) if values else None

  steps = [S[s]["step_1e-12"] for s in names]
  reached = f"by step {max(steps):,}" if None not in steps else "not within the run for every setting"
  txt = (f"{FIGURE}: "
         f"balanced UFM, K = {summary['K']}, n = {summary['n']}, d = {summary['d']}, "
         f"λ_W = {summary['lam_W']:g}, λ_H = {summary['lam_H']:g}, settings {', '.join(names)}, heavy-ball GD "
         f"(lr {c.lr:g}, momentum {c.momentum:g}), {summary['seeds']} seeds, {summary['steps']:,} steps; "
         f"{sum(S[s]['converged'] for s in names)} of {sum(S[s]['runs'] for s in names)} runs converged, and the "
         f"numbers are over those. Largest final objective gap {_f(worst('gap'), '.1e')} (relative to the closed "
         f"form); every converged seed is within 1e-12 of it {reached}; NC1 ≤ {_f(worst('nc1'), '.0e')}; "
         f"NC3 ≤ {_f(worst('self_duality', etf), '.0e')} where the limit is a simplex ETF; ‖W‖²_F within "
         f"{_f(worst('norm_W_sq_rel'), '.0e')} of its closed form; the classifier agrees with the nearest class "
         f"mean on a fraction ≥ {_f(worst('nc4_min', fn=min), '.4f')} of the samples. ETF error of W ≤ "
         f"{_f(worst('etf_error_W', etf), '.0e')} for {', '.join(etf) or 'no setting'}")
  for s in frame:
    txt += (f"; {s} ends at the {S[s]['geometry']} (Tirer & Bruna 2022 Thm. 3.1): ETF error of W "
            f"{_f(S[s]['etf_error_W'], '.4f')} (predicted {S[s]['pred_etf_error_W']:.4f}), of its centred means "
            f"{_f(S[s]['etf_error_M'], '.0e')}")
  return txt + "."


def plot(results: xr.Dataset, c):
  """Two rows of panels: objective gap, NC1, NC2 of W and of the means, NC3, NC4, ||W||^2, and the legend.

  Only converged runs are drawn (:func:`experiments.runner.gate`); the title says how many were left out."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(2, 4, figsize=(15, 6.8), constrained_layout=True)
  axs = axs.ravel()
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  x = results.step.values
  notes = []
  for i, s in enumerate(results.setting.values):
    r = results.sel(setting=s)
    ok, note = runner.gate(r.converged.values, r.diverged.values)
    if note:
      notes.append(f"{s}: {note}")
    col, style = colors[i % len(colors)], dict(_common.STYLES[i % len(_common.STYLES)], markevery=0.12, ms=4)
    for ax, (key, title, var) in zip(axs, _PANELS):
      if key == "gap":
        f_star = float(r.pred_objective)
        Y = (r.trace_objective.values[ok] - f_star) / abs(f_star)
        _common.spread(ax, x, Y, color=col, label=f"{s} ({r.geometry.item()})", floor=1e-17, **style)
      elif key == "nc4":
        _common.spread(ax, x, 1.0 - r.trace_nc4.values[ok], color=col, label=s, logy=False, **style)
      else:
        _common.spread(ax, x, r[f"trace_{var}"].values[ok], color=col, label=s, floor=1e-32, **style)
        target = float(r[f"pred_{var}"])
        if np.isfinite(target) and target > 0:
          ax.axhline(target, color=col, lw=5, alpha=0.25, zorder=0)
      ax.set_title(title, fontsize=9)
  for ax, (key, _, _) in zip(axs, _PANELS):
    ax.set(xscale="log", yscale="linear" if key == "nc4" else "log", xlabel="step")
  handles, labels = axs[0].get_legend_handles_labels()
  axs[-1].axis("off")
  axs[-1].legend(handles, labels, loc="center", fontsize=9, title="setting (predicted geometry)")
  axs[-1].text(0.5, 0.08, "broad pale lines: closed-form limits\n(where non-zero; zero limits are not drawn)",
               ha="center", fontsize=8, transform=axs[-1].transAxes)
  left = "; ".join(notes) if notes else "every run converged (|∇f| ≤ gtol)"
  fig.suptitle(f"Balanced UFM, K={results.attrs['K']}, n={results.attrs['n']}, d={results.attrs['d']}, "
               f"$\\lambda_W$={results.attrs['lam_W']:g}, $\\lambda_H$={results.attrs['lam_H']:g}: mean (line) and "
               f"min–max (band) over {results.sizes['seed']} seeds per setting; {left}.\n"
               "Log-scale panels clip values below their floor (exact zeros) to the floor.", fontsize=10)
  return fig
