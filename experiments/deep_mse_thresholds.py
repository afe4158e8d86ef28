r"""Checks Dang et al. 2023's imbalanced MSE theorem over lambda_H: classes cross the collapse threshold one by one.

Counts ``(8, 4, 2, 2)`` (Dang et al.'s ``(200, 100, 50, 50)`` profile scaled down so that float64 L-BFGS is
cheap), width ``d = 6`` at every layer, :math:`\lambda_{W_m} = 0.05` on every layer and :math:`\lambda_H`
on a log grid, depths :math:`M \in \{1, 2, 3, 4\}`, ``num_seeds`` random starts per point (vmapped; the best is kept, and the
fraction of starts that reach the global minimum is recorded: for ``M >= 2`` every class has a local minimum
at 0). Against :func:`ufm.theory.deep_mse_minimiser` with the global rule (argmin over ``{0, x_+}``) and
with Dang et al.'s rule (the largest root, their ``compute_x``); vertical lines: the global thresholds
(:func:`lam_H_threshold` at :func:`ufm.theory.deep_threshold_ratio`; solid) and where the largest root stops existing (dotted; Dang et
al.'s code raises there). Between the two, for ``M >= 2``, their rule predicts a non-zero class that is
not the global minimiser.

New figure (the paper has no sweep over :math:`\lambda`): imbalanced, bias-free deep linear MSE-UFM over
:math:`\lambda_H` at depths 1-4, L-BFGS in float64. Every start counts as converged when L-BFGS reaches
``gtol`` (1e-10); the figure draws, per point, the best *converged* start (:func:`experiments.runner.gate`) and says
how many starts were left out.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import jax.numpy as jnp
import ufm
from experiments import _common, runner
from ufm import deep, theory

PAPER = "Dang et al. 2023 (arXiv 2301.00437), imbalanced MSE theorem and code (compute_x)"
FIGURE = ("checks Dang et al. 2023's imbalanced MSE theorem (general orthogonal frame) over lambda_H; new figure, "
          "and a counterexample to their code's largest-root rule")
RUNTIME = "255 s wall under load ~9 on 2 shared cores (80 s CPU; compile 210 s)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: counts (8, 4, 2, 2), d = 6, depths 1-4, lam_W = 0.05, 48 values of lam_H, 4 starts. ``"smoke"``: depth 2,
  3 values, 2 starts."""
  c = ml_collections.ConfigDict()
  c.counts = (8, 4, 2, 2)
  c.d = 6
  c.depths = (1, 2, 3, 4)
  c.lam_W = 0.05
  c.lam_H_min, c.lam_H_max, c.num_lams = 5e-4, 1.0, 48
  c.seed, c.num_seeds = 0, 4
  c.init_scale, c.max_steps, c.gtol = 1.0, 5000, 1e-10
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.counts, c.d, c.depths, c.num_lams, c.num_seeds, c.max_steps = (4, 2), 2, (2,), 3, 2, 50
  return c


def sweep(c) -> dict:
  """Vmapped axes: ``lam_H`` (the feature decay; ``lam_W`` fixed on every layer) and seeds."""
  return {"lam_H": _common.log_grid(c, "lam_H_min", "lam_H_max", "num_lams"), "seed": _common.seeds(c)}


def lam_H_threshold(counts, M: int, lam_W: float, ratio: float) -> np.ndarray:
  r"""The ``lam_H`` at which :math:`b/n_k` reaches ``ratio``: :math:`b = MN\lambda_W(N\lambda_H)^{1/M}` gives
  :math:`\lambda_H = (	ext{ratio}\,n_k/(MN\lambda_W))^M/N`. With ``ratio`` = :func:`ufm.theory.deep_threshold_ratio`
  the global threshold, with :func:`ufm.theory.deep_existence_ratio` the end of Dang et al.'s largest root."""
  n = np.asarray(counts, np.float64)
  N = n.sum()
  return (ratio * n / (M * N * lam_W)) ** M / N


def run(c, ctx) -> xr.Dataset:
  """Dims ``(depth, lam_H, seed, class)`` for the solver's per-class norms, ``(depth, lam_H, class)`` for the theory."""
  lams, seeds = ctx.axes["lam_H"], ctx.axes["seed"]
  depths = tuple(_common.check_int("depth", M, lo=1, hi=20) for M in c.depths)
  problems = {M: deep.make_deep_problem(c.counts, d=c.d, depth=M, lam_W=c.lam_W, lam_H=float(lams[0]), loss="mse",
                                        dtype=_common.dtype(c)) for M in depths}
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=c.gtol, dtype=_common.dtype(c))
  K = len(c.counts)
  D, L, S = len(depths), len(lams), len(seeds)
  w, h = np.zeros((D, L, S, K)), np.zeros((D, L, S, K))
  f, conv = np.zeros((D, L, S)), np.zeros((D, L, S), bool)
  th = {k: np.zeros((D, L, K)) for k in ("w_global", "h_global", "w_largest", "h_largest")}
  f_th = {k: np.zeros((D, L)) for k in ("global", "largest")}
  thr, exist = np.zeros((D, K)), np.zeros((D, K))
  for j, M in enumerate(depths):
    p = problems[M]
    res = ctx.sweep(f"deep_mse_thresholds[M={M}]", ufm.lbfgs_reference, p, hp, axes=ctx.axes, max_steps=c.max_steps)
    sol = res.solution
    W = np.asarray(jax.vmap(jax.vmap(lambda prm: prm.W))(sol.params), np.float64)
    Hs = np.asarray(sol.params.H, np.float64)
    labels = np.asarray(p.labels)
    Hbar = np.stack([Hs[..., labels == k].mean(-1) for k in range(K)], -1)
    w[j], h[j] = np.linalg.norm(W, axis=-1), np.linalg.norm(Hbar, axis=-2)
    f[j], conv[j] = np.asarray(sol.objective), np.asarray(sol.converged)
    for rule in ("global", "largest"):
      t = jax.vmap(lambda lam: theory.deep_mse_minimiser(c.counts, c.lam_W, lam, M=M, bias=False, rule=rule))(
          jnp.asarray(lams))
      th[f"w_{rule}"][j] = np.sqrt(np.maximum(np.diagonal(np.asarray(t.gram_W), axis1=-2, axis2=-1), 0))
      th[f"h_{rule}"][j] = np.sqrt(np.maximum(np.diagonal(np.asarray(t.gram_M), axis1=-2, axis2=-1), 0))
      f_th[rule][j] = np.asarray(t.objective)
    thr[j] = lam_H_threshold(c.counts, M, c.lam_W, theory.deep_threshold_ratio(M))
    exist[j] = lam_H_threshold(c.counts, M, c.lam_W, theory.deep_existence_ratio(M))
  ds = xr.Dataset(
      {"norm_w": (("depth", "lam_H", "seed", "class"), w), "norm_h": (("depth", "lam_H", "seed", "class"), h),
       "objective": (("depth", "lam_H", "seed"), f), "converged": (("depth", "lam_H", "seed"), conv),
       **{f"pred_{k}": (("depth", "lam_H", "class"), v) for k, v in th.items()},
       **{f"pred_objective_{k}": (("depth", "lam_H"), v) for k, v in f_th.items()},
       "pred_threshold": (("depth", "class"), thr), "pred_existence": (("depth", "class"), exist)},
      coords={"depth": list(depths), "lam_H": lams, "seed": seeds, "class": np.arange(K)})
  ds["reached_global"] = np.abs(ds.objective - ds.pred_objective_global) <= 1e-7 * np.abs(ds.pred_objective_global)
  ds.attrs.update(counts=list(c.counts), d=c.d, lam_W=c.lam_W)
  return ds


def _best_converged(r):
  """Per ``lam_H`` the index of the lowest-objective converged start (``-1`` where none converged)."""
  ok, _ = runner.gate(r.converged.values)
  f = np.where(ok, r.objective.values, np.inf)
  best = np.argmin(f, axis=-1)
  return np.where(ok.any(-1), best, -1), ok


def summary(results: xr.Dataset, c) -> dict:
  """Per depth: converged starts, starts reaching the global minimum, the largest relative error of the best
  converged start's class norms against the global closed form, and the lam_H points where Dang et al.'s
  largest-root rule predicts another class norm than the global minimiser (and what the solver found there)."""
  out = {"depths": {}}
  lams = results.lam_H.values
  for M in results.depth.values:
    r = results.sel(depth=M)
    best, ok = _best_converged(r)
    have = best >= 0
    idx = np.where(have, best, 0)
    wb = np.take_along_axis(r.norm_w.values, idx[:, None, None], axis=1)[:, 0]
    pg, pl = r.pred_w_global.values, r.pred_w_largest.values
    scale = max(float(np.max(pg)), 1e-300)  # the largest class norm of the sweep at this depth
    err = np.max(np.abs(wb - pg), axis=-1) / scale
    differ = np.any(np.abs(pl - pg) > 1e-6 * scale, axis=-1)
    fg = np.take_along_axis(r.reached_global.values, idx[:, None], axis=1)[:, 0]
    out["depths"][str(int(M))] = {
        "starts": int(ok.size), "converged": int(ok.sum()), "points": int(lams.size),
        "points_without_converged_start": int((~have).sum()),
        "reached_global": int(r.reached_global.values[ok].sum()),
        "best_at_global": int((have & fg).sum()),
        "best_rel_error": float(np.max(err[have & fg])) if (have & fg).any() else None,
        "best_gap_elsewhere": (float(np.max((np.take_along_axis(r.objective.values, idx[:, None], axis=1)[:, 0]
                                             - r.pred_objective_global.values)[have & ~fg]
                                            / np.abs(r.pred_objective_global.values[have & ~fg])))
                               if (have & ~fg).any() else None),
        "largest_rule_differs": int(differ.sum()),
        "largest_rule_differs_best_is_global": int((differ & have & fg).sum()),
        "thresholds": [float(v) for v in r.pred_threshold.values]}
  a = results.attrs
  out.update(counts=[int(k) for k in a["counts"]], d=int(a["d"]), lam_W=float(a["lam_W"]),
             lam_H=[float(lams[0]), float(lams[-1])], num_lams=int(lams.size), seeds=int(results.sizes["seed"]))
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  D = summary["depths"]
  conv = sum(r["converged"] for r in D.values())
  starts = sum(r["starts"] for r in D.values())
  errs = [r["best_rel_error"] for r in D.values() if r["best_rel_error"] is not None]
  txt = (f"checks Dang et al. 2023's imbalanced MSE theorem (general orthogonal frame, bias-free) over λ_H; new "
         f"figure (the paper has no λ sweep). Counts {tuple(summary['counts'])}, d = {summary['d']}, λ_W = "
         f"{summary['lam_W']:g}, {summary['num_lams']} values of λ_H in [{summary['lam_H'][0]:g}, "
         f"{summary['lam_H'][1]:g}], M in {{{', '.join(D)}}}, float64 L-BFGS from {summary['seeds']} starts per point: "
         f"{conv} of {starts} starts converge (‖∇f‖ ≤ {c.gtol:.0e}). The best converged start is at the global minimum "
         "of the closed form (argmin over {0, x+}) at " + ", ".join(
             f"{r['best_at_global']}/{r['points']} λ_H values for M = {M}" for M, r in D.items())
         + f", its class norms within {format(max(errs), '.0e') if errs else 'n/a'} of the closed form there "
         "(relative to the largest class norm)" + ("; elsewhere every start ends at another local minimum, up to "
         + ", ".join(f"{100 * r['best_gap_elsewhere']:.1f} % (M = {M})" for M, r in D.items()
                     if r["best_gap_elsewhere"] is not None) + " above it" if any(
             r["best_gap_elsewhere"] is not None for r in D.values()) else "")
         + ". Starts reaching the global minimum: "
         + ", ".join(f"M = {M}: {r['reached_global']}/{r['converged']}" for M, r in D.items()) + ". ")
  bad = {M: r for M, r in D.items() if r["largest_rule_differs"]}
  if bad:
    txt += ("Dang et al.'s largest-root rule (their compute_x) predicts a non-zero class that is not the global "
            "minimiser at " + ", ".join(f"{r['largest_rule_differs']} λ_H values for M = {M} (the best start reaches "
            f"the lower global minimum at {r['largest_rule_differs_best_is_global']} of them)" for M, r in bad.items())
            + ": a counterexample to that rule between the global threshold and the end of the largest root.")
  return txt


def plot(results: xr.Dataset, c):
  """One panel per depth: per-class ||w_k|| of the product classifier (best converged start) against lam_H, the
  global closed form (solid), Dang et al.'s largest-root rule (dashed), thresholds (solid/dotted verticals)."""
  from matplotlib import pyplot as plt
  D = results.sizes["depth"]
  fig, axs = plt.subplots(1, D, figsize=(4.6 * D, 4.4), constrained_layout=True, squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  marks = ("o", "s", "^", "v")
  lams = results.lam_H.values
  counts = results.attrs["counts"]
  notes = []
  for j, M in enumerate(results.depth.values):
    ax = axs[0, j]
    r = results.sel(depth=M)
    best, ok = _best_converged(r)
    _, note = runner.gate(r.converged.values)
    if note:
      notes.append(f"M={M}: {note}")
    have = best >= 0
    wb = np.take_along_axis(r.norm_w.values, np.where(have, best, 0)[:, None, None], axis=1)[:, 0]
    for k in range(results.sizes["class"]):
      col = colors[k % len(colors)]
      ax.plot(lams, r.pred_w_global.values[:, k], color=col, lw=1.5, label=f"class {k} (n={counts[k]})")
      ax.plot(lams, r.pred_w_largest.values[:, k], color=col, lw=1, ls="--")
      ax.plot(lams[have], wb[have, k], marks[k % len(marks)], color=col, ms=6 - k, mfc="none", mew=1)
      ax.axvline(float(r.pred_threshold.values[k]), color=col, lw=0.8)
      if M > 1:
        ax.axvline(float(r.pred_existence.values[k]), color=col, lw=0.8, ls=":")
    n_ok = int(ok.sum())
    reached = int(r.reached_global.values[ok].sum())
    ax.set(xscale="log", xlabel=r"$\lambda_H$", ylabel=r"$\|\bar w_k\|$ (product classifier)")
    ax.set_title(f"M={M}: {reached} of {n_ok} converged starts reach the global minimum", fontsize=9)
  ties = [[k for k, n in enumerate(counts) if n == m] for m in dict.fromkeys(counts)]
  ties = [g for g in ties if len(g) > 1]
  axs[0, 0].legend(fontsize=7, title="; ".join(f"classes {', '.join(map(str, g))} coincide" for g in ties) or None,
                   title_fontsize=7)
  left = "; ".join(notes) if notes else f"Every start converged (‖∇f‖ ≤ {c.gtol:g})"
  fig.suptitle(f"Imbalanced bias-free deep linear MSE-UFM, counts {tuple(counts)}, d={results.attrs['d']}, "
               f"λ_W={results.attrs['lam_W']:g}: L-BFGS (float64, best converged start; markers) vs closed form (solid: "
               "global argmin over {0, x+}; dashed: Dang et al.'s largest root).\nVerticals: global threshold (solid), "
               f"end of the largest root (dotted). {left}.", fontsize=9)
  return fig
