r"""Reproduces Dang et al. 2023's synthetic balanced deep linear MSE experiment (their code's setting); CE rows new.

Dang, Tran, Osher, Tran-The, Ho, Nguyen (ICML 2023, arXiv 2301.00437), direct optimisation of the deep linear
UFM in their ``synthetic_experiment_balanced.py``: balanced, ``K = 4``, ``n = 100``, ``d = 64`` at every layer,
:math:`\lambda_{W_m} = \lambda_H = 5\cdot10^{-4}`, full-batch SGD with heavy-ball momentum 0.9, learning rate 0.1,
:math:`\mathcal N(0, 0.1^2)` initialisation of every entry, 30 000 iterations, depths ``M`` in {1, 3, 6, 9} (their
README), MSE with a last-layer bias and bias-free. Their code computes, along the run, NC1 of ``H``
(:math:`\mathrm{tr}(\Sigma_W\Sigma_B^+)/K`), NC2 of the product :math:`\bar W = W_M\cdots W_1`
(:math:`\|\bar W\bar W^\top/\|\cdot\|_F - T/\|T\|_F\|_F`, ``T`` the simplex ETF with a bias, the identity without) and
NC3 :math:`\|\bar Z/\|\bar Z\|_F - T/\|T\|_F\|_F` of the class-mean logits (means centred with a bias); the first
three columns of the figure are these quantities against the iteration. Their paper's figure of this experiment
(its number and panel layout) could not be checked here; where our setting differs: ours runs 4 seeds (they: 1)
in float64 (they: float32 on a GPU), and adds the worst layer of two per-layer metrics (NC2 of the class means of
every layer; NC3 as Papyan et al.'s self-duality of :math:`C_m = W_M\cdots W_m` against layer ``m``'s means,
computed from the matrices, :func:`ufm.deep.self_duality_layers`) and the gradient norm.

The CE rows (with and without the bias) are ours: Dang et al.'s synthetic experiments are MSE only. Their final
objectives are compared with the best ETF configuration (:func:`ufm.theory.deep_ce_etf`) and the rank-``K/2`` block
construction (:func:`ufm.theory.deep_ce_block`) of Garrod & Keating (2024, arXiv 2410.23169, Thm. 1: for
``K >= 4, M >= 3`` no ETF configuration is a global minimum). Where a converged CE run ends at the rank-2 block
minimum, NC1 of ``H`` stays at an O(0.1) value: the classifier does not use one between-class direction of ``H``,
along which the class means and the within-class scatter both decay only through :math:`\lambda_H`, at the same
rate, so their ratio (which NC1 reads through :math:`\Sigma_B^+`) keeps its random initial value; the findings
give its relative change over the second half of the run. A run counts as converged when its final gradient
norm is at most ``gtol`` = 1e-8 (float64); the figure and the findings use converged runs only
(:func:`experiments.runner.gate`).
"""

import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, _deep, runner
from ufm import deep, theory

PAPER = "Dang et al. 2023 (arXiv 2301.00437); CE rows: Garrod & Keating 2024 (arXiv 2410.23169)"
FIGURE = ("reproduces Dang et al. 2023's synthetic balanced experiment in its MSE rows (their code's setting; figure "
          "number unverified; ours: 4 seeds, float64); the CE rows are new (compared with Garrod & Keating 2024 Thm. 1)")
RUNTIME = ("750 s wall under load 6-9 on 2 shared cores (672 s after resuming a run stopped at ~80 s; 330 s CPU "
           "in all)")

TRACE = ("nc1_layers", "mean_grams", "classifier_grams", "balance_errors", "logit_means", "self_duality_layers")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: Dang et al.'s setting and budget (30 000 steps, depths 1, 3, 6, 9), float64, 4 seeds (the paper: 1), and
  CE rows (ours). A run counts as converged when its final gradient norm is at most ``gtol`` = 1e-8. ``"smoke"``:
  one setting, depth 2."""
  c = ml_collections.ConfigDict()
  c.settings = ("mse", "mse+bias", "ce", "ce+bias")
  c.depths = (1, 3, 6, 9)
  c.K, c.n, c.d = 4, 100, 64
  c.lam = 5e-4
  c.seed, c.num_seeds = 0, 4
  c.lr, c.momentum, c.init_scale = 0.1, 0.9, 0.1
  c.num_steps, c.log_every = 30_000, 250
  c.gtol = 1e-8
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.settings, c.depths = ("mse+bias",), (2,)
    c.K, c.n, c.d, c.num_seeds, c.num_steps, c.log_every = 3, 3, 4, 2, 40, 20
  return c



def _problems(c) -> dict:
  settings = _common.check_settings(c.settings)
  depths = tuple(_common.check_int("depth", M, lo=1, hi=50) for M in c.depths)
  return {(s, M): deep.make_deep_problem(ufm.balanced_counts(c.K, c.n), d=c.d, depth=M, lam_W=c.lam, lam_H=c.lam,
                                         loss=_common.SETTINGS[s][0], bias=_common.SETTINGS[s][1],
                                         dtype=_common.dtype(c))
          for s in settings for M in depths}


def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, depth, seed, step, layer)`` for per-feature-layer traces (``layer`` 0 = ``H`` ... ``M`` = logits),
  ``clayer`` (``m = 1..M``) for the classifier-side ones (NaN beyond a network's layers),
  ``(setting, depth, seed)`` for final values, ``(setting, depth)`` for predictions."""
  problems = _problems(c)
  _common.check_steps(c)
  hp = _common.gd_hparams(c, gtol=c.gtol)
  L = max(c.depths) + 1
  settings, depths = tuple(c.settings), tuple(c.depths)
  T = c.num_steps // c.log_every
  S = len(ctx.axes["seed"])
  shape = (len(settings), len(depths))
  Lc = max(c.depths)
  out = {k: np.full(shape + (S, T, L if k in ("nc1", "nc2_M") else Lc), np.nan)
         for k in ("nc1", "nc2_M", "nc2_C", "nc3", "balance")}
  fin = {k: np.full(shape + (S,), np.nan) for k in ("objective", "grad_norm", "diverged", "converged", "logit_rank",
                                                     "nc2_pred_M")}
  trace_obj, trace_gn, trace_dang = (np.full(shape + (S, T), np.nan) for _ in range(3))
  pred = {k: np.full(shape, np.nan) for k in ("objective", "F_etf", "F_blk")}
  geometry = np.empty(shape, object)
  pi = np.full(c.K, 1.0 / c.K)
  for (s, M), p in problems.items():
    i, j = settings.index(s), depths.index(M)
    res = ctx.sweep(f"deep_layers_nc[{s},M={M}]", ufm.gradient_descent, p, hp, axes=ctx.axes, num_steps=c.num_steps,
                    log_every=c.log_every, trace_metrics=TRACE)
    sol, tm = res.solution, {k: np.asarray(v, np.float64) for k, v in res.solution.trace.metrics.items()}
    cen = p.bias or p.loss == "ce"
    Tg = _deep.target_gram(c.K, centred=cen)
    MG = _deep.centred(tm["mean_grams"], pi) if cen else tm["mean_grams"]
    out["nc1"][i, j] = _deep.pad(tm["nc1_layers"], L)
    out["nc2_M"][i, j] = _deep.pad(_deep.gram_errors(MG, Tg), L)
    out["nc2_C"][i, j] = _deep.pad(_deep.gram_errors(tm["classifier_grams"], Tg), Lc)
    out["nc3"][i, j] = _deep.pad(tm["self_duality_layers"], Lc)  # from the matrices: no sqrt(2 - 2cos) floor
    out["balance"][i, j] = _deep.pad(tm["balance_errors"], Lc)
    trace_dang[i, j] = _deep.logit_frame_error(tm["logit_means"], centred=cen)
    trace_obj[i, j], trace_gn[i, j] = np.asarray(sol.trace.objective), np.asarray(sol.trace.grad_norm)
    fin["objective"][i, j], fin["grad_norm"][i, j] = np.asarray(sol.objective), np.asarray(sol.grad_norm)
    fin["diverged"][i, j], fin["converged"][i, j] = np.asarray(sol.diverged), np.asarray(sol.converged)
    sv = np.linalg.svd(tm["logit_means"][:, -1] @ (np.eye(c.K) - 1.0 / c.K), compute_uv=False)
    fin["logit_rank"][i, j] = np.sum(sv > 1e-2 * sv[:, :1], axis=1)
    try:
      tgt = _deep.predicted_layer_grams(p)
      pr = tgt["prediction"]
      pred["objective"][i, j] = pr.objective
      geometry[i, j] = pr.geometry
      TM = _deep.centred(tgt["mean_grams"][0], pi) if cen else tgt["mean_grams"][0]
      fin["nc2_pred_M"][i, j] = _deep.gram_errors(MG[:, -1, 0], TM)
    except theory.NoClosedFormError as e:
      geometry[i, j] = f"none ({e})"
    if p.loss == "ce":
      pred["F_etf"][i, j] = float(theory.deep_ce_etf(c.K, c.n, M, c.lam, c.lam).objective)
      if c.K % 2 == 0:
        pred["F_blk"][i, j] = float(theory.deep_ce_block(c.K, c.n, M, c.lam, c.lam).objective)
  seeds = ctx.axes["seed"]
  steps = c.log_every * np.arange(1, T + 1)
  dims5 = ("setting", "depth", "seed", "step", "layer")
  dimsc = dims5[:-1] + ("clayer",)
  ds = xr.Dataset({f"trace_{k}": (dims5 if k in ("nc1", "nc2_M") else dimsc, v) for k, v in out.items()},
                  coords={"setting": list(settings), "depth": list(depths), "seed": seeds, "step": steps,
                          "layer": np.arange(L), "clayer": np.arange(1, Lc + 1)})
  ds["trace_objective"] = (("setting", "depth", "seed", "step"), trace_obj)
  ds["trace_grad_norm"] = (("setting", "depth", "seed", "step"), trace_gn)
  ds["trace_nc3_logits"] = (("setting", "depth", "seed", "step"), trace_dang)
  for k, v in fin.items():
    ds[k] = (("setting", "depth", "seed"), v.astype(bool) if k in ("diverged", "converged") else v)
  for k, v in pred.items():
    ds[f"pred_{k}"] = (("setting", "depth"), v)
  ds["geometry"] = (("setting", "depth"), geometry.astype(str))
  ds.attrs.update(K=c.K, n=c.n, d=c.d, lam=c.lam, lr=c.lr, momentum=c.momentum, num_steps=c.num_steps, gtol=c.gtol)
  return ds


_COLS = (("nc1_H", "NC1 of $H$"),
         ("nc2_W", r"NC2 of $\bar W = W_M\cdots W_1$"),
         ("nc3_logits", r"NC3: $\bar W\bar H$ vs the frame"),
         ("nc2_M", "NC2 of the class means,\nworst layer (ours)"),
         ("nc3", r"NC3: self-duality of $W_M\cdots W_m$" "\nand layer-$m$ means, worst layer (ours)"),
         ("grad_norm", r"gradient norm $\|\nabla f\|$"))


def _curves(r, key):
  """(seed, step) curves of panel ``key`` for one (setting, depth)."""
  if key == "nc1_H":
    return r.trace_nc1.values[..., 0]
  if key == "nc2_W":
    return r.trace_nc2_C.values[..., 0]
  if key in ("nc3_logits", "grad_norm"):
    return r[f"trace_{key}"].values
  return np.nanmax(r[f"trace_{key}"].values, axis=-1)


def _final(r, key):
  return _curves(r, key)[..., -1]


def summary(results: xr.Dataset, c) -> dict:
  """Per setting and depth, over the converged seeds: run counts, the largest final value of every plotted metric,
  the final gradient norms, and (CE) the final objective relative to the best ETF and to the block construction
  and the rank of the class-mean logits."""
  out = {"rows": {}}
  for s in results.setting.values:
    for M in results.depth.values:
      r = results.sel(setting=s, depth=M)
      ok, _ = runner.gate(r.converged.values, r.diverged.values)
      row = {"setting": str(s), "M": int(M), "runs": int(ok.size), "converged": int(ok.sum()),
             "diverged": int(r.diverged.values.sum()), "geometry": str(r.geometry.item())[:40],
             "grad_norm_max_all": float(np.nanmax(r.grad_norm.values))}
      for key, _ in _COLS:
        v = _final(r, key)[ok]
        row[key] = float(np.max(v)) if v.size else None
      row["nc2_pred_M"] = float(np.max(r.nc2_pred_M.values[ok])) if ok.any() else None
      if str(s).startswith("ce"):
        f, rank = r.objective.values[ok], r.logit_rank.values[ok]
        F_etf, F_blk = float(r.pred_F_etf), float(r.pred_F_blk)
        row["at_etf"] = int(np.sum(np.abs(f - F_etf) <= 1e-8 * F_etf))
        row["at_block"] = int(np.sum(np.abs(f - F_blk) <= 1e-8 * F_blk)) if np.isfinite(F_blk) else 0
        row["block_vs_etf"] = (F_blk - F_etf) / F_etf if np.isfinite(F_blk) else None
        row["rank"] = sorted({int(x) for x in rank})
        # NC1 of H half-way and at the end, for the runs that end below full rank K - 1 and the others
        nc1 = r.trace_nc1.values[ok][:, :, 0]
        low = rank < c.K - 1
        for tag, sel in (("low", low), ("full", ~low)):
          row[f"nc1_H_{tag}"] = float(np.max(nc1[sel, -1])) if sel.any() else None
          row[f"nc1_H_{tag}_min"] = float(np.min(nc1[sel, -1])) if sel.any() else None
          row[f"nc1_H_{tag}_drift"] = (float(np.max(np.abs(nc1[sel, -1] / nc1[sel, nc1.shape[1] // 2 - 1] - 1)))
                                       if sel.any() else None)
      out["rows"][f"{s},M={int(M)}"] = row
  a = results.attrs
  out.update(K=int(a["K"]), n=int(a["n"]), d=int(a["d"]), lam=float(a["lam"]), seeds=int(results.sizes["seed"]),
             steps=int(a["num_steps"]), gtol=float(a["gtol"]), settings=[str(s) for s in results.setting.values],
             depths=[int(M) for M in results.depth.values])
  return out


def _fmt(v, spec=".0e"):
  return "n/a" if v is None else format(v, spec)


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  R = summary["rows"]

  def rows(prefix):
    return [r for r in R.values() if r["setting"] in prefix]

  def worst(rs, key, fn=max):
    v = [r[key] for r in rs if r.get(key) is not None]
    return fn(v) if v else None

  mse, ce = rows(("mse", "mse+bias")), rows(("ce", "ce+bias"))
  conv = sum(r["converged"] for r in R.values())
  runs = sum(r["runs"] for r in R.values())
  div = [f"{r['setting']} M = {r['M']}" for r in R.values() if r["diverged"]]
  txt = (f"reproduces Dang et al. 2023's synthetic balanced experiment (their code's setting: K = {summary['K']}, "
         f"n = {summary['n']}, d = {summary['d']}, λ = {summary['lam']:g}, SGD lr {c.lr:g} momentum {c.momentum:g}, "
         f"{summary['steps']:,} iterations, M in {{{', '.join(map(str, summary['depths']))}}}, MSE with and without "
         f"a last-layer bias; figure number unverified; ours: {summary['seeds']} seeds instead of 1, float64); CE rows "
         f"new. {conv} of {runs} runs reach ‖∇f‖ ≤ {summary['gtol']:.0e} and are plotted"
         + (f" (diverged: {', '.join(div)})" if div else "") + ". MSE, every depth: NC1 of H ≤ "
         f"{_fmt(worst(mse, 'nc1_H'))}, NC2 of W_M⋯W_1 ≤ {_fmt(worst(mse, 'nc2_W'))}, NC3 (logits vs the frame) ≤ "
         f"{_fmt(worst(mse, 'nc3_logits'))}, worst-layer NC2 of the means ≤ {_fmt(worst(mse, 'nc2_M'))} and "
         f"worst-layer self-duality ≤ {_fmt(worst(mse, 'nc3'))} (computed from the matrices): collapse at every "
         "layer and every depth at the paper's budget.")
  for s in ("ce", "ce+bias"):
    rs = rows((s,))
    if not rs:
      continue
    stopped = [r for r in rs if r["converged"] < r["runs"]]
    parts = []
    for r in rs:
      if not r["converged"]:
        continue
      part = (f"M = {r['M']}: {r['at_etf']} of {r['converged']} converged runs at the best ETF, {r['at_block']} at "
              f"the rank-K/2 blocks" + (f" ({100 * r['block_vs_etf']:+.1f} % vs the ETF)" if r["block_vs_etf"] else "")
              + f", logit rank {'/'.join(map(str, r['rank']))}")
      if r["nc1_H_low"] is not None:
        part += (f", NC1 of H {_fmt(r['nc1_H_low_min'], '.2g')}–{_fmt(r['nc1_H_low'], '.2g')} in the low-rank runs "
                 f"(changed by ≤ {_fmt(r['nc1_H_low_drift'], '.0e')} relative over the second half)")
      parts.append(part)
    txt += f" {s} (ours): " + ("; ".join(parts) if parts else "no converged run")
    if stopped:
      txt += ("; not converged at the budget: " + ", ".join(
          f"M = {r['M']} ({r['runs'] - r['converged']} of {r['runs']}, ‖∇f‖ up to {r['grad_norm_max_all']:.0e})"
          for r in stopped))
    txt += "."
  if any(r.get("nc1_H_low") is not None for r in ce):
    txt += (" The CE NC1 plateau of H at large depth is in converged runs: they end at Garrod & Keating's rank-2 "
            "block minimum, whose classifier does not use one between-class direction of H; along it the class means "
            "and the within-class scatter both decay only through λ_H, at the same rate, so their ratio, which NC1 "
            "reads through Σ_B⁺, keeps its random initial value.")
  return txt


def plot(results: xr.Dataset, c):
  """One row per setting, one column per metric of :data:`_COLS` against the iteration (log y), one colour, line
  style and marker per depth; mean (line) and min–max band over the converged seeds of each (setting, depth)."""
  from matplotlib import pyplot as plt
  S, D = results.sizes["setting"], results.sizes["depth"]
  fig, axs = plt.subplots(S, len(_COLS), figsize=(3.2 * len(_COLS), 2.7 * S + 1.0), constrained_layout=True,
                          squeeze=False, sharex=True)
  cmap = plt.get_cmap("viridis")
  x = results.step.values
  notes = []
  for i, s in enumerate(results.setting.values):
    for j, M in enumerate(results.depth.values):
      r = results.sel(setting=s, depth=M)
      ok, note = runner.gate(r.converged.values, r.diverged.values)
      if note:
        notes.append(f"{s} M={M}: {note}")
      style = dict(_common.STYLES[j % len(_common.STYLES)], markevery=0.15, ms=3.5, lw=1.2)
      for k, (key, _) in enumerate(_COLS):
        _common.spread(axs[i, k], x, _curves(r, key)[ok], color=cmap(0.9 * j / max(D - 1, 1)), label=f"M = {M}",
                       floor=1e-34, **style)
    who = "Dang et al.'s setting" if str(s).startswith("mse") else "ours, not in Dang et al."
    for k, (key, title) in enumerate(_COLS):
      ax = axs[i, k]
      ax.set(yscale="log", xlim=(0, x[-1]))
      ax.set_title(f"{s} ({who})\n{title}" if k == 0 else title, fontsize=8)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3, lw=0.5)
    if axs[i, 0].get_legend_handles_labels()[0]:  # no converged run: nothing to label
      axs[i, 0].legend(fontsize=7, loc="lower left")
  for ax in axs[-1]:
    ax.set_xlabel("iteration")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(3, 3))
  a = results.attrs
  left = "; ".join(notes) if notes else f"every run reached ‖∇f‖ ≤ {a['gtol']:g}"
  fig.suptitle(f"Deep linear UFM, balanced, K={a['K']}, n={a['n']}, d={a['d']}, λ={a['lam']:g}, SGD lr {a['lr']:g} "
               f"momentum {a['momentum']:g}, {a['num_steps']:,} iterations, float64: MSE rows reproduce Dang et al. "
               f"2023's synthetic experiment (they: 1 seed, float32); CE rows are ours.\nMean (line) and min–max (band) "
               f"over the converged of {results.sizes['seed']} seeds; {left}. Flat lines near 1e-16 (1e-32 for NC1) are "
               "float64 round-off.",
               fontsize=9)
  return fig
