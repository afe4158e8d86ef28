r"""Loss family in the UFM: the minimiser's norm and geometry against the loss parameter (label smoothing, focal,
rescaled MSE).

Checks Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu 2022 (arXiv 2210.02192) Thm. 3.1 (global minimisers of the balanced UFM
with label smoothing or focal loss are simplex ETFs; the paper's figures are of trained networks, not of the UFM, so
none is reproduced) with the norms derived in derivations §12: for each loss, the balanced, bias-free UFM
(:class:`ufm.loss_problem.LossProblem`) is solved by float64 L-BFGS over a grid of its parameter (``alpha``,
``gamma``, ``kappa``; a vmapped sweep axis, with ``num_seeds`` random starts each) and compared with
:func:`ufm.theory.label_smoothing_etf`, :func:`ufm.theory.focal_etf` and :func:`ufm.theory.rescaled_mse_minimiser`
(which is an orthogonal frame without a bias, a simplex ETF with one).
"""

import math

import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common
from ufm.loss_problem import loss_params, make_loss_problem

PAPER = "Zhou et al. 2022 (Are All Losses Created Equal?)"
FIGURE = "checks Zhou et al. 2022 Thm. 3.1 (ETF minimisers; norms derived here)"
RUNTIME = "75 s (compile 70 s)"

#: loss -> (the swept parameter, the grid's config key)
PARAMS = {"label_smoothing": ("alpha", "alphas"), "focal": ("gamma", "gammas"), "rescaled_mse": ("kappa", "kappas")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, n = 3, d = 4, lam_W = lam_H = 0.02 (collapse index tau = 0.139), 13 parameter values per loss,
  4 starts each. ``"smoke"``: label smoothing only, K = 3, n = 2, 2 values, 1 start, 30 iterations."""
  c = ml_collections.ConfigDict()
  c.losses = ("label_smoothing", "focal", "rescaled_mse")
  c.K, c.n, c.d = 4, 3, 4
  c.lam_W, c.lam_H = 0.02, 0.02
  c.alphas = tuple(np.round(np.linspace(0.0, 0.9, 13), 4).tolist())
  c.gammas = tuple(np.round(np.linspace(0.0, 6.0, 13), 4).tolist())
  c.kappas = tuple(np.round(np.geomspace(0.1, 10.0, 13), 4).tolist())
  c.M = 2.0  # the rescaled MSE's target M
  c.seed, c.num_seeds, c.init_scale = 0, 4, 1.0
  c.max_steps, c.gtol = 3000, 1e-10
  c.num_curve = 200
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.K, c.n, c.d, c.num_seeds, c.max_steps, c.num_curve = 3, 2, 3, 1, 30, 5
    c.alphas, c.gammas, c.kappas = (0.1, 0.5), (1.0, 3.0), (0.5, 2.0)
    c.losses = ("label_smoothing",)  # one L-BFGS program to compile (test budget)
  return c


def _theory(loss, c, values):
  """Closed-form ``||W||_F^2`` and objective at each parameter value (NumPy)."""
  th = ufm.theory
  K, n, lw, lh = c.K, c.n, c.lam_W, c.lam_H
  if loss == "label_smoothing":
    s = th.label_smoothing_etf(K, n, lw, lh, np.asarray(values))
    return K * np.asarray(s.norm_w_sq), np.asarray(s.objective)
  if loss == "focal":
    out = [th.focal_etf(K, n, lw, lh, v) for v in values]
    return np.asarray([K * float(s.norm_w_sq) for s in out]), np.asarray([float(s.objective) for s in out])
  out = [th.rescaled_mse_minimiser(K, n, lw, lh, v, c.M, bias=False) for v in values]
  return np.asarray([float(np.trace(s.gram_W)) for s in out]), np.asarray([float(s.objective) for s in out])


def run(c, ctx) -> xr.Dataset:
  """Dims ``(loss, value, seed)`` for the solves, ``(loss, value)`` for the closed forms, ``(loss, curve)`` for the
  closed-form curve."""
  losses = _common.check_settings(c.losses, allowed=tuple(PARAMS), key="losses")
  dt = _common.dtype(c)
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  num_curve = _common.check_int("num_curve", c.num_curve, lo=2)
  counts = ufm.balanced_counts(c.K, c.n)
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=c.gtol, dtype=dt)
  parts = []
  for loss in losses:
    name, key = PARAMS[loss]
    values = np.asarray(c[key], np.float64)
    extra = {"M": c.M} if loss == "rescaled_mse" else {}
    problem = make_loss_problem(counts, d=c.d, lam_W=c.lam_W, lam_H=c.lam_H, loss=loss, dtype=dt,
                                **{name: values[0]}, **extra)
    _common.check_int(f"len({key})", len(values), lo=2)
    loss_params(loss, **{name: values})  # validates the grid (one-line ValueError)
    res = ctx.sweep(f"loss_family_etf[{loss}]", ufm.lbfgs_reference, problem, hp,
                    axes={name: values, "seed": ctx.axes["seed"]}, max_steps=c.max_steps)
    ds = _common.sweep_dataset(res)
    metric = "of_error_W" if loss == "rescaled_mse" else "etf_error_W"
    for k, v in _common.final_metrics(res, problem, ("nc1", metric, "norm_W_sq")).items():
      ds[k if k != metric else "geometry_error_W"] = v
    ds = ds.rename({name: "value"})
    norm, obj = _theory(loss, c, values)
    ds["pred_norm_W_sq"] = ("value", norm)
    ds["pred_objective"] = ("value", obj)
    curve = np.linspace(values.min(), values.max(), num_curve)
    cn, co = _theory(loss, c, curve)
    ds["curve_value"] = ("curve", curve)
    ds["curve_norm_W_sq"] = ("curve", cn)
    ds["curve_objective"] = ("curve", co)
    parts.append(ds.drop_vars("num_steps").assign(num_iterations=ds.num_steps).assign_coords(
        value=np.arange(len(values))).assign(param_value=("value", values)))
  out = xr.concat(parts, dim=xr.DataArray(list(losses), dims="loss", name="loss"))
  tau = c.K * math.sqrt(c.n * c.lam_W * c.lam_H)
  out.attrs.update(K=c.K, n=c.n, d=c.d, lam_W=c.lam_W, lam_H=c.lam_H, tau=tau, M=c.M,
                   params=[PARAMS[l][0] for l in losses])
  return out


def plot(results: xr.Dataset, c):
  """Top: ``||W||_F^2`` of every start (markers) against the closed form (line) over the loss parameter. Bottom:
  relative objective gap of the best start to the closed form, and the geometry error of ``W`` (ETF error; for the
  bias-free rescaled MSE the orthogonal-frame error), every start."""
  from matplotlib import pyplot as plt
  losses = list(results.loss.values)
  fig, axs = plt.subplots(2, len(losses), figsize=(4.6 * len(losses), 7), squeeze=False, constrained_layout=True)
  a = results.attrs
  for j, (loss, pname) in enumerate(zip(losses, a["params"])):
    r = results.sel(loss=loss)
    x = r.param_value.values
    ax = axs[0][j]
    ax.plot(r.curve_value.values, r.curve_norm_W_sq.values, "k-", lw=1.5, alpha=0.6, label="closed form")
    for s in range(r.sizes["seed"]):
      ax.plot(x, r.norm_W_sq.values[:, s], "o", mfc="none", color="C0", ms=6,
              label="L-BFGS starts" if s == 0 else None)
    ax.set(xlabel=pname, ylabel=r"$\|W\|_F^2$", xscale="log" if pname == "kappa" else "linear")
    ax.set_title(f"{loss}" + (f" (M = {a['M']:g}, no bias)" if loss == "rescaled_mse" else ""), fontsize=10)
    ax.legend(fontsize=8)
    ax = axs[1][j]
    best = np.nanmin(r.objective.values, axis=1)
    gap = np.abs(best - r.pred_objective.values) / np.abs(r.pred_objective.values)
    ax.plot(x, np.maximum(gap, 1e-17), "C3s-", label="|f_best - f*| / f* (floored at 1e-17)")
    alive = (r.pred_norm_W_sq.values > 0)[:, None]  # no ETF / OF target at the zero solution
    geo = np.where(alive, np.maximum(r.geometry_error_W.values, 1e-17), np.nan)
    for s in range(r.sizes["seed"]):
      ax.plot(x, geo[:, s], "C2x", label=("OF" if loss == "rescaled_mse" else "ETF") + " error of W (starts)"
              if s == 0 else None)
    ax.set(yscale="log", xlabel=pname, xscale="log" if pname == "kappa" else "linear", ylim=(1e-18, 1))
    ax.legend(fontsize=8)
  fig.suptitle(f"Balanced UFM, K={a['K']}, n={a['n']}, d={a['d']}, lam_W = lam_H = {a['lam_W']:g} "
               f"(tau = {a['tau']:.3f}); float64 L-BFGS, {results.sizes['seed']} starts per value "
               "(zero minimiser: no ETF error drawn)", fontsize=10)
  return fig


def summary(results, c) -> dict:
  """Per loss, over the converged starts: the largest relative gap to the closed-form objective and ||W||^2, and the
  largest geometry error of W (distance to the predicted ETF / orthogonal frame)."""
  out = {"K": int(results.attrs["K"]), "n": int(results.attrs["n"]), "d": int(results.attrs["d"]),
         "lam_W": float(results.attrs["lam_W"]), "lam_H": float(results.attrs["lam_H"]),
         "values": int(results.sizes["value"]), "seeds": int(results.sizes["seed"]), "losses": {}}
  for i, loss in enumerate(results.loss.values):
    r = results.sel(loss=loss)
    ok = r.converged.values & ~r.diverged.values
    nonzero = (r.pred_norm_W_sq.values > 0)[:, None] & ok  # the geometry of W = 0 (beyond the threshold) is undefined
    pred, pw = r.pred_objective.values[:, None], r.pred_norm_W_sq.values[:, None]
    gap = (np.abs(r.objective.values - pred) / np.abs(pred))[ok]
    nw = (np.abs(r.norm_W_sq.values - pw) / np.maximum(np.abs(pw), 1.0))[ok]
    geo = r.geometry_error_W.values[nonzero]
    pv = r.param_value.values
    out["losses"][str(loss)] = {"runs": int(ok.size), "converged": int(ok.sum()),
                                "param": str(results.attrs["params"][i]), "lo": float(pv.min()), "hi": float(pv.max()),
                                "gap": float(gap.max()) if gap.size else None,
                                "norm": float(nw.max()) if nw.size else None,
                                "geometry": float(geo.max()) if geo.size else None}
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v: "n/a" if v is None else f"{v:.1e}"
  parts = "; ".join(f"{loss} ({L['param']} ∈ [{L['lo']:g}, {L['hi']:g}]): {L['converged']}/{L['runs']} starts converged, "
                    f"objective within {f(L['gap'])} and ‖W‖² within {f(L['norm'])} of the closed form, geometry "
                    f"error of W ≤ {f(L['geometry'])} where the minimiser is not 0" for loss, L in summary["losses"].items())
  return (f"{FIGURE}: balanced UFM, K = {summary['K']}, n = {summary['n']}, d = {summary['d']}, λ_W = "
          f"{summary['lam_W']:g}, λ_H = {summary['lam_H']:g}, {summary['values']} values of each loss parameter × "
          f"{summary['seeds']} float64 L-BFGS starts — {parts}.")
