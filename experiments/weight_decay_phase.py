r"""Weight-decay phase diagram: the minimiser's norms and NC metrics over a (lam_W, lam_H) grid.

Balanced UFM (CE and MSE, bias-free by default), the float64 L-BFGS reference solver
vmapped over a log-spaced grid of :math:`(\lambda_W, \lambda_H)` in one call per loss. Above
the collapse threshold :math:`\tau = K\sqrt{n\lambda_W\lambda_H} \ge 1` the global minimiser
is ``W = 0, H = 0`` (:func:`ufm.theory.collapse_threshold`); below it the minimiser is the
simplex ETF (CE; MSE with bias) or the orthogonal frame (bias-free MSE) with the norms of
:func:`ufm.theory.ce_balanced` / :func:`ufm.theory.mse_minimiser`. The heatmaps show the
solved :math:`\|W\|_F^2`, :math:`\|H\|_F^2` and the ETF error of ``W`` with the threshold
curve :math:`\lambda_H = 1/(K^2 n\lambda_W)`; the right panel is the cut
:math:`\lambda_W = \lambda_H` against the closed-form curves.

Sources: Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1 (CE); Zhou et al. 2022
(arXiv 2203.01238), Thm. 3.1 (MSE); Tirer & Bruna 2022 (arXiv 2202.08087), Thm. 3.1 (bias-free
MSE); the threshold: derivations §1.2 and §5.1 (derived there, checked here).
"""

import math

import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, runner

PAPER = "Zhu et al. 2021; Zhou et al. 2022"
FIGURE = ("checks Zhu et al. 2021 Thm. 3.1, Zhou et al. 2022 Thm. 3.1 and Tirer & Bruna 2022 Thm. 3.1 with its "
          "threshold (the phase diagram is new)")
RUNTIME = "86 s wall (load ~4, 2 cores shared with other jobs; 43 s CPU)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, n = 5, d = 8, 17 x 17 grid over [1e-4, 1]. ``"smoke"``: K = 3, CE only, 3 x 3 grid."""
  c = ml_collections.ConfigDict()
  c.losses = ("ce", "mse")
  c.bias = False
  c.K, c.n, c.d = 4, 5, 8
  c.lam_min, c.lam_max, c.num_lams = 1e-4, 1.0, 17
  c.seed, c.init_scale = 0, 0.1
  c.max_steps, c.gtol = 3000, 1e-10
  c.num_curve = 200  # points of the closed-form curve along lam_W = lam_H
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.K, c.n, c.d, c.num_lams, c.max_steps, c.num_curve = 3, 2, 3, 3, 50, 5
    c.losses = ("ce",)  # one L-BFGS program to compile (CI budget)
  return c


def sweep(c) -> dict:
  """The vmapped axes: ``lam_W`` (outer) and ``lam_H``, the same log-spaced values."""
  lams = _common.log_grid(c, "lam_min", "lam_max", "num_lams")
  return {"lam_W": lams, "lam_H": lams}


def _at(problem, lam_W, lam_H):
  """``problem`` with the weight decays replaced (arrays of the problem's dtype)."""
  return problem.replace(lam_W=np.asarray(lam_W, problem.dtype), lam_H=np.asarray(lam_H, problem.dtype))


def _curve(problem, lams) -> dict:
  """Closed-form norms and objective along lam_W = lam_H = lam (NumPy floats, computed in ``run``)."""
  out = {"norm_W_sq": [], "norm_H_sq": [], "objective": []}
  for lam in lams:
    pred, _ = _common.predicted(_at(problem, lam, lam))
    for k in out:
      out[k].append(pred[k])
  return {k: np.asarray(v) for k, v in out.items()}


def run(c, ctx) -> xr.Dataset:
  """Dims ``(loss, lam_W, lam_H)`` for solved and predicted values; ``(loss, lam)`` for the curve."""
  losses = _common.check_settings(c.losses, allowed=("ce", "mse"), key="losses")
  dt = _common.dtype(c)
  problems = {loss: ufm.make_problem(ufm.balanced_counts(c.K, c.n), d=c.d, lam_W=1.0, lam_H=1.0, loss=loss,
                                     bias=bool(c.bias), dtype=dt) for loss in losses}
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=c.gtol, dtype=dt)
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  _common.check_int("num_curve", c.num_curve, lo=2)
  curve_lams = np.geomspace(float(c.lam_min), float(c.lam_max), c.num_curve)
  names = ("etf_error_W", "etf_error_M", "of_error_W", "nc1", "norm_W_sq", "norm_H_sq")
  parts = []
  for loss, problem in problems.items():
    res = ctx.sweep(f"weight_decay_phase[{loss}]", ufm.lbfgs_reference, problem, hp, axes=ctx.axes,
                    seed=c.seed, max_steps=c.max_steps)
    ds = _common.sweep_dataset(res)
    for k, v in _common.final_metrics(res, problem, names).items():
      ds[k] = v
    grid = {"norm_W_sq": [], "norm_H_sq": [], "objective": [], "etf_error_W": []}
    for lw in ctx.axes["lam_W"]:
      row = {k: [] for k in grid}
      for lh in ctx.axes["lam_H"]:
        pred, _ = _common.predicted(_at(problem, lw, lh))
        for k in grid:
          row[k].append(pred.get(k, np.nan))  # no ETF target at the zero solution
      for k in grid:
        grid[k].append(row[k])
    for k, v in grid.items():
      ds[f"pred_{k}"] = (("lam_W", "lam_H"), np.asarray(v))
    for k, v in _curve(problem, curve_lams).items():
      ds[f"curve_{k}"] = ("lam", v)
    ds = ds.assign_coords(lam=curve_lams)
    ds["geometry_below"] = ufm.theory.predict(_at(problem, curve_lams[0], curve_lams[0])).geometry
    parts.append(ds.drop_vars("num_steps").assign(num_iterations=ds.num_steps))
  ds = xr.concat(parts, dim=xr.DataArray(list(problems), dims="loss", name="loss"))
  ds["tau"] = (("lam_W", "lam_H"), c.K * np.sqrt(c.n * np.outer(ctx.axes["lam_W"], ctx.axes["lam_H"])))
  ds.attrs.update(K=c.K, n=c.n, d=c.d, bias=bool(c.bias), threshold_lam=1.0 / (c.K * math.sqrt(c.n)))
  return ds


def _relerr(r, v):
  """|solved - closed form| / max(|closed form|, 1): relative, absolute below 1 (the zero solution)."""
  return np.abs(r[v].values - r[f"pred_{v}"].values) / np.maximum(np.abs(r[f"pred_{v}"].values), 1.0)


def summary(results: xr.Dataset, c) -> dict:
  """Per loss, over the converged grid points: the largest norm error, the largest |ETF error - target| below the
  threshold, and the zero solutions at and above it."""
  out = {"K": int(results.attrs["K"]), "n": int(results.attrs["n"]), "d": int(results.attrs["d"]),
         "bias": bool(results.attrs["bias"]), "grid": int(results.sizes["lam_W"]),
         "lam_min": float(results.lam_W.min()), "lam_max": float(results.lam_W.max()), "losses": {}}
  tau = results.tau.values
  for loss in results.loss.values:
    r = results.sel(loss=loss)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    norms = np.maximum(_relerr(r, "norm_W_sq"), _relerr(r, "norm_H_sq"))[ok]
    below, above = ok & (tau < 1), ok & (tau >= 1)
    etf = np.abs(r.etf_error_W.values - r.pred_etf_error_W.values)[below]
    zero = (r.norm_W_sq.values <= 1e-20) & (r.norm_H_sq.values <= 1e-20)
    out["losses"][str(loss)] = {
        "points": int(ok.size), "converged": int(ok.sum()), "norm_err": float(norms.max()) if norms.size else None,
        "etf_err": float(etf.max()) if etf.size else None, "etf_target": float(np.nanmax(r.pred_etf_error_W.values)),
        "geometry": str(r.geometry_below.item()), "above": int(above.sum()), "zero_above": int((zero & above).sum()),
        "zero_below": int((zero & below).sum()),
        "max_norm_W_sq_above": float(r.norm_W_sq.values[above].max()) if above.any() else None}
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v, spec: "n/a" if v is None else format(v, spec)
  txt = (f"{FIGURE}; the collapse threshold τ = K√(nλ_Wλ_H) = 1 is derived in derivations §1.2, §5.1: balanced UFM, K = {summary['K']}, n = {summary['n']}, d = {summary['d']}, "
         f"{'with' if summary['bias'] else 'no'} bias, a {summary['grid']} × {summary['grid']} log grid "
         f"λ_W, λ_H ∈ [{summary['lam_min']:g}, {summary['lam_max']:g}], float64 L-BFGS (gtol {c.gtol:g}) vmapped "
         f"over the grid.")
  for loss, L in summary["losses"].items():
    txt += (f" {loss}: {L['converged']} of {L['points']} grid points converged; over those ‖W‖²_F and ‖H‖²_F are "
            f"within {f(L['norm_err'], '.0e')} of the closed forms (relative, absolute below 1), the ETF error of W "
            f"within {f(L['etf_err'], '.0e')} of its target {L['etf_target']:.4f} ({L['geometry']}) below the "
            f"threshold; at the {L['above']} converged points with τ ≥ 1, where the minimiser is W = H = 0, the "
            f"solved ‖W‖²_F ≤ {f(L['max_norm_W_sq_above'], '.0e')}.")
  return txt


def _heat(fig, ax, lw, lh, v, title, conv):
  from matplotlib.colors import LogNorm
  v = np.where((np.asarray(v, np.float64) > 0) & conv, v, np.nan)  # unconverged points left out (marked x)
  finite = v[np.isfinite(v)]
  norm = LogNorm(vmin=max(finite.min(), 1e-17), vmax=max(finite.max(), 1e-16)) if finite.size else None
  im = ax.pcolormesh(lw, lh, v.T, norm=norm, shading="nearest", cmap="viridis")
  fig.colorbar(im, ax=ax)
  if (~conv).any():
    ii, jj = np.nonzero(~conv)
    ax.scatter(lw[ii], lh[jj], marker="x", color="red", s=14, label="L-BFGS not converged")
    ax.legend(fontsize=7, loc="lower left")
  ax.set(xscale="log", yscale="log", xlabel=r"$\lambda_W$", ylabel=r"$\lambda_H$")
  ax.set_title(title, fontsize=9)


def plot(results: xr.Dataset, c):
  """Rows: losses. Columns: solved ||W||^2; relative error of ||W||^2, ||H||^2 against the closed form;
  |ETF error of W - its closed-form target|; the cut lam_W = lam_H against the closed-form curves. White cells:
  exactly 0 (or undefined: no ETF target at the zero solution). Dashed: the threshold."""
  from matplotlib import pyplot as plt
  losses = list(results.loss.values)
  fig, axs = plt.subplots(len(losses), 4, figsize=(16, 3.5 * len(losses)), squeeze=False, constrained_layout=True)
  lw, lh = results.lam_W.values, results.lam_H.values
  K, n = results.attrs["K"], results.attrs["n"]
  thr_x = np.geomspace(lw.min(), lw.max(), 100)
  thr_y = 1.0 / (K**2 * n * thr_x)
  keep = (thr_y >= lh.min()) & (thr_y <= lh.max())
  for row, loss in zip(axs, losses):
    r = results.sel(loss=loss)
    conv = r.converged.values
    relerr = lambda v: _relerr(r, v)
    _heat(fig, row[0], lw, lh, r.norm_W_sq.values, rf"{loss}: $\|W\|_F^2$ (L-BFGS)", conv)
    _heat(fig, row[1], lw, lh, np.maximum(relerr("norm_W_sq"), relerr("norm_H_sq")),
          rf"{loss}: $|\Delta\|W\|^2|, |\Delta\|H\|^2|$ vs closed form (rel.; abs. below 1)", conv)
    _heat(fig, row[2], lw, lh, np.abs(r.etf_error_W.values - r.pred_etf_error_W.values),
          f"{loss}: |ETF error of $W$ − target| (target {np.nanmax(r.pred_etf_error_W.values):.3g})", conv)
    for ax in row[:3]:
      ax.plot(thr_x[keep], thr_y[keep], "w--", lw=1.5)
    ax = row[3]
    floor = 1e-3 * np.nanmin(np.where(r.curve_norm_W_sq.values > 0, r.curve_norm_W_sq.values, np.nan))
    clip = lambda v: np.maximum(v, floor)
    ax.plot(r.lam.values, clip(r.curve_norm_W_sq.values), "C0-", lw=2, alpha=0.6, label=r"$\|W\|_F^2$ closed form")
    ax.plot(r.lam.values, clip(r.curve_norm_H_sq.values), "C1--", lw=1, label=r"$\|H\|_F^2$ closed form")
    ax.plot(lw, clip(np.diagonal(r.norm_W_sq.values)), "C0o", ms=6, mfc="none", label=r"$\|W\|_F^2$ L-BFGS")
    ax.plot(lh, clip(np.diagonal(r.norm_H_sq.values)), "C1x", ms=5, label=r"$\|H\|_F^2$ L-BFGS")
    ax.axvline(results.attrs["threshold_lam"], color="k", ls=":", lw=1, label=r"$K\sqrt{n}\lambda = 1$")
    ax.set(xscale="log", yscale="log", xlabel=r"$\lambda_W = \lambda_H$")
    ax.set_title(f"{loss}: cut λ_W = λ_H ({r.geometry_below.item()} below; 0 drawn at the floor)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
  notes = [f"{loss}: {runner.gate(results.sel(loss=loss).converged.values)[1] or 'every point converged'}"
           for loss in losses]
  fig.suptitle(f"Balanced UFM, K={K}, n={n}, d={results.attrs['d']}, bias={results.attrs['bias']}: float64 L-BFGS "
               f"over a {len(lw)}x{len(lh)} grid (one vmapped call per loss); dashed: collapse threshold "
               r"$K\sqrt{n\lambda_W\lambda_H} = 1$" + f"\n{'; '.join(notes)} (x: not converged, left out)",
               fontsize=10)
  return fig
