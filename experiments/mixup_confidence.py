r"""Confidence of mixed examples against the mixing weight: mixup CE vs plain CE vs MSE, against the closed forms.

Input-mixup UFM (:mod:`ufm.mixup`) with the classifier fixed to a simplex ETF (rows of norm 1), trained by mixup SGD
(:func:`ufm.mixup.mixup_sgd`), vmapped over the feature decay :math:`\lambda_H` and seeds:

* **mixup CE**: the optimal mixed features on a uniform grid of :math:`\lambda`; their softmax confidence;
* **plain CE**: the same model trained without mixup (grid :math:`\lambda \in \{0, 1\}`, i.e. the plain fixed-classifier
  UFM), whose class features are then interpolated linearly, :math:`h = \lambda h_c + (1-\lambda)h_{c'}` (what a
  model that was not trained on mixed inputs gives them if its features interpolate linearly);
* **MSE**: mixup with the squared loss, softmax of its logits.

Lines: :func:`ufm.theory.mixup_confidence` (``mixup=True``/``False``, ``loss="ce"``/``"mse"``). Dotted: the mixing
proportion :math:`\max(\lambda, 1-\lambda)` (perfect calibration on mixed examples). Stationarity gives
:math:`p_c = \lambda + p_o - \mu a` (derivations §11 B.1), so the mixup-CE confidence tends to the mixing proportion as
:math:`\kappa = \beta/\mu \to \infty`; the right panel shows the mean gap against :math:`\kappa`.

Sources: Fisher, Meng, Papyan (ICLR 2024, arXiv 2402.06171), Sec. 3 and the calibration discussion (mixup lowers
confidence on mixed examples); closed forms derived in derivations §2.3, §11 Part B.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import jax.numpy as jnp
import ufm
from experiments import _common, runner
from ufm import mixup, theory

PAPER = "Fisher, Meng, Papyan 2024"
FIGURE = ("checks Fisher et al. 2024 Sec. 3 (optimal mixed features for a fixed simplex-ETF classifier) through"
          " its confidence; the figure is new")
RUNTIME = "81 s wall (load ~4, 2 cores shared with other jobs; 28 s CPU)"

_SETTINGS = ("mixup_ce", "plain_ce", "mixup_mse")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, d = 5, lam_H in {0.3, 0.1, 0.03, 0.01} (vmapped), 21 grid values, 2 seeds, 12000 steps."""
  c = ml_collections.ConfigDict()
  c.settings = _SETTINGS
  c.K, c.d = 4, 5
  c.lam_Hs = (0.3, 0.1, 0.03, 0.01)
  c.lam_H_main = 0.03        # the lam_H of the left panel (one of lam_Hs)
  c.num_lam = 21
  c.seed, c.num_seeds = 0, 2
  c.batch_size = 64
  c.lr = 64.0                # lr / batch_size = 1: a unit step on each drawn feature's own problem
  c.num_steps, c.log_every = 12_000, 1000
  c.init_scale = 0.1
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.settings, c.K, c.d, c.lam_Hs, c.lam_H_main = ("mixup_ce",), 3, 3, (0.3, 0.1), 0.1
    c.num_lam, c.num_seeds, c.num_steps, c.log_every = 5, 2, 20, 10
  return c


def sweep(c) -> dict:
  """The vmapped axes: ``lam_H`` (the feature decay mu) and seeds."""
  return {"lam_H": _common.positive("lam_Hs", c.lam_Hs), "seed": _common.seeds(c)}


def _validate(c, axes):
  settings = _common.check_settings(c.settings, allowed=_SETTINGS, key="settings")
  if not np.any(np.isclose(axes["lam_H"], c.lam_H_main)):
    raise ValueError(f"lam_H_main = {c.lam_H_main!r}: allowed: one of lam_Hs = {tuple(c.lam_Hs)}")
  _common.check_int("K", c.K, lo=2, hi=20)
  _common.check_int("num_lam", c.num_lam, lo=3)
  _common.check_steps(c)
  _common.check_int("batch_size", c.batch_size)
  for name in ("lr", "init_scale"):
    ufm.problem.check_real(name, c[name], lo=0.0, lo_open=True)
  dt = _common.dtype(c)
  grid = np.linspace(0.0, 1.0, c.num_lam)
  kw = dict(d=c.d, lam_H=float(axes["lam_H"][0]), key=jax.random.key(c.seed), dtype=dt)
  problems = {"mixup_ce": lambda: mixup.make_input_mixup_problem(c.K, lam_grid=grid, **kw),
              "plain_ce": lambda: mixup.make_input_mixup_problem(c.K, lam_grid=(0.0, 1.0), **kw),
              "mixup_mse": lambda: mixup.make_input_mixup_problem(c.K, lam_grid=grid, loss="mse", **kw)}
  return settings, axes, grid, {s: problems[s]() for s in settings}


@jax.jit
def _confidences(W, H_dxKxKxQ, lam):
  """Softmax confidence of every ordered pair c != c' (``[pair, lam]``): the trained mixed features when ``H`` has
  ``len(lam)`` nodes, else (plain: nodes lam = 0, 1) the linear interpolation of the class features."""
  K, Q = W.shape[0], H_dxKxKxQ.shape[-1]
  out = []
  for a in range(K):
    for b in range(K):
      if a == b:
        continue
      if Q == lam.shape[0]:
        H = H_dxKxKxQ[:, a, b, :]
      else:  # class features: the lam = 1 node of every pair (c, .), averaged over the partner (all equal at optimum)
        h_a, h_b = H_dxKxKxQ[:, a, :, 1].mean(-1), H_dxKxKxQ[:, b, :, 1].mean(-1)
        H = lam[None, :] * h_a[:, None] + (1 - lam[None, :]) * h_b[:, None]
      out.append(jnp.max(jax.nn.softmax(W @ H, axis=0), axis=0))
  return jnp.stack(out)


def run(c, ctx) -> xr.Dataset:
  """Dataset: ``confidence`` with dims ``(setting, lam_H, seed, pair, lam)``, the closed form ``theory`` with dims
  ``(setting, lam_H, lam)`` and ``theory_fine`` on ``lam_fine``, and the training traces."""
  settings, axes, grid, problems = _validate(c, ctx.axes)
  lam_fine = np.linspace(0.0, 1.0, 201)
  parts, conf, th, th_fine = [], [], [], []
  for s, p in problems.items():
    hp = _common.gd_hparams(c)
    res = ctx.sweep(f"mixup_confidence[{s}]", mixup.mixup_sgd, p, hp, axes=axes, num_steps=c.num_steps,
                    log_every=c.log_every, batch_size=c.batch_size)
    parts.append(_common.sweep_dataset(res, log_every=c.log_every))
    P = res.solution.params
    lead = P.H.shape[:2]
    Hm = P.H.reshape(lead + (p.d, p.K, p.K, p.num_lam))
    fn = jax.vmap(jax.vmap(_confidences, in_axes=(0, 0, None)), in_axes=(0, 0, None))
    conf.append(np.asarray(fn(P.W, Hm, jnp.asarray(grid, p.dtype))))
    kw = dict(lam_H=axes["lam_H"][:, None], loss="mse" if s == "mixup_mse" else "ce", mixup=s != "plain_ce")
    th.append(np.asarray(theory.mixup_confidence(grid[None, :], p.K, **kw)))
    th_fine.append(np.asarray(theory.mixup_confidence(lam_fine[None, :], p.K, **kw)))
  ds = xr.concat(parts, dim=xr.DataArray(list(settings), dims="setting", name="setting"))
  ds["confidence"] = (("setting", "lam_H", "seed", "pair", "lam"), np.stack(conf))
  ds["theory"] = (("setting", "lam_H", "lam"), np.stack(th))
  ds["theory_fine"] = (("setting", "lam_H", "lam_fine"), np.stack(th_fine))
  kappa = np.geomspace(0.3, 3e3, 60)
  beta = c.K / (c.K - 1)
  gap = {}
  for name, mix in (("mixup", True), ("plain", False)):
    cf = np.asarray(theory.mixup_confidence(lam_fine[None, :], c.K, lam_H=beta / kappa[:, None], mixup=mix))
    gap[name] = np.mean(np.abs(cf - np.maximum(lam_fine, 1 - lam_fine)[None, :]), axis=1)
  ds["theory_gap_mixup"] = ("kappa", gap["mixup"])
  ds["theory_gap_plain"] = ("kappa", gap["plain"])
  ds = ds.assign_coords(lam=grid, lam_fine=lam_fine, kappa=kappa)
  ds.attrs.update(K=c.K, d=c.d, lam_H_main=float(c.lam_H_main), num_steps=c.num_steps, batch_size=c.batch_size)
  return ds


_STYLE = {"mixup_ce": ("C0", "mixup CE"), "plain_ce": ("C3", "plain CE, features interpolated"),
          "mixup_mse": ("C2", "mixup MSE (softmax of its logits)")}


def _kappa(results, lam_H):
  """kappa = rho^2 K / ((K - 1) lam_H) with rho = 1 (the fixed classifier's row norm)."""
  K = results.attrs["K"]
  return K / (K - 1) / np.asarray(lam_H)


def summary(results: xr.Dataset, c) -> dict:
  """Per setting: converged runs, the largest |trained - closed-form confidence| over them; per lam_H, the trained
  and closed-form calibration gaps (mean |confidence - max(lam, 1 - lam)| over the grid)."""
  lam = results.lam.values
  calib = np.maximum(lam, 1 - lam)
  out = {"K": int(results.attrs["K"]), "d": int(results.attrs["d"]), "steps": int(results.attrs["num_steps"]),
         "seeds": int(results.sizes["seed"]), "num_lam": int(lam.size), "settings": {}}
  for s in results.setting.values:
    r = results.sel(setting=s)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    err = np.abs(r.confidence - r.theory).values[ok]  # [run, pair, lam]
    rows = []
    for i, mu in enumerate(results.lam_H.values):
      keep = ok[i]
      trained = np.abs(r.confidence.values[i][keep] - calib).mean() if keep.any() else None
      rows.append({"lam_H": float(mu), "kappa": float(_kappa(results, mu)),
                   "gap_trained": None if trained is None else float(trained),
                   "gap_theory": float(np.abs(r.theory.values[i] - calib).mean())})
    out["settings"][str(s)] = {"runs": int(ok.size), "converged": int(ok.sum()),
                               "max_err": float(err.max()) if err.size else None, "by_lam_H": rows}
  out["kappa_max"] = float(results.kappa.values[-1])
  out["gap_mixup_at_max"] = float(results.theory_gap_mixup.values[-1])
  out["gap_plain_at_max"] = float(results.theory_gap_plain.values[-1])
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v, spec: "n/a" if v is None else format(v, spec)
  parts = []
  for s, S in summary["settings"].items():
    gaps = ", ".join(f"κ = {R['kappa']:.3g}: {f(R['gap_trained'], '.3f')} (closed form {R['gap_theory']:.3f})"
                     for R in S["by_lam_H"])
    parts.append(f"{_STYLE[s][1]}: {S['converged']}/{S['runs']} runs converged, trained confidences within "
                 f"{f(S['max_err'], '.0e')} of the closed form; calibration gap {gaps}")
  S = summary["settings"]
  tail = ""
  if "mixup_ce" in S and "plain_ce" in S:
    pairs = [(m["gap_trained"], p["gap_trained"]) for m, p in zip(S["mixup_ce"]["by_lam_H"], S["plain_ce"]["by_lam_H"])
             if m["gap_trained"] is not None and p["gap_trained"] is not None]
    tail = (f" Trained, mixup gives the smaller gap at {sum(m < p for m, p in pairs)} of the {len(pairs)} κ values; "
            f"in closed form, at κ = {summary['kappa_max']:g} the gap is {summary['gap_mixup_at_max']:.4f} with mixup "
            f"and {summary['gap_plain_at_max']:.4f} without (right panel).")
  return (f"{FIGURE}: input-mixup UFM, K = {summary['K']}, d = {summary['d']}, fixed simplex-ETF classifier (rows "
          f"of norm 1), mixup SGD {summary['steps']:,} steps, {summary['seeds']} seeds, a {summary['num_lam']}-point "
          f"λ grid; κ = ρ²K/((K−1)λ_H). " + "; ".join(parts) + "." + tail)


def plot(results: xr.Dataset, c):
  """Left: confidence vs lambda at ``lam_H_main``; middle: mixup CE for every lam_H; right: calibration gap vs kappa.
  Runs that did not converge are left out (:func:`experiments.runner.gate`) and counted in the title."""
  from matplotlib import pyplot as plt
  mask, note = runner.gate(results.converged.values, results.diverged.values)
  ok = xr.DataArray(mask, dims=results.converged.dims, coords={k: results[k] for k in results.converged.dims})
  results = results.assign(confidence=results.confidence.where(ok))
  fig, axs = plt.subplots(1, 3, figsize=(16, 4.8), constrained_layout=True)
  lam, lam_fine = results.lam.values, results.lam_fine.values
  a = results.attrs
  i_main = int(np.argmin(np.abs(results.lam_H.values - a["lam_H_main"])))
  calib = np.maximum(lam_fine, 1 - lam_fine)
  ax = axs[0]
  for s in results.setting.values:
    col, label = _STYLE[str(s)]
    r = results.sel(setting=s).isel(lam_H=i_main)
    Y = r.confidence.values.reshape(-1, lam.size)
    Y = Y[np.isfinite(Y).all(1)]
    if not Y.size:
      continue
    yerr = np.maximum([Y.mean(0) - Y.min(0), Y.max(0) - Y.mean(0)], 0.0)  # rounding can make a spread of 0 negative
    ax.errorbar(lam, Y.mean(0), yerr=yerr, fmt="o", ms=4, color=col,
                label=f"{label}: trained")
    ax.plot(lam_fine, r.theory_fine, color=col, lw=1.2, label=f"{label}: closed form")
  ax.plot(lam_fine, calib, "k:", lw=1, label=r"mixing proportion $\max(\lambda, 1-\lambda)$")
  ax.set(xlabel=r"$\lambda$", ylabel="confidence (max softmax probability)",
         title=f"K={a['K']}, $\\lambda_H$={results.lam_H.values[i_main]:g}: trained features (mean, min–max over "
               "pairs and seeds)")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # off the data
  ax = axs[1]
  if "mixup_ce" in results.setting.values:
    r = results.sel(setting="mixup_ce")
    cmap = plt.get_cmap("viridis")
    n = results.sizes["lam_H"]
    for i, mu in enumerate(results.lam_H.values):
      col = cmap(i / max(n - 1, 1))
      Y = r.confidence.isel(lam_H=i).values.reshape(-1, lam.size)
      kappa = a["K"] / (a["K"] - 1) / mu
      ax.plot(lam, np.nanmean(Y, 0), "o", ms=4, color=col, label=f"$\\lambda_H$={mu:g} ($\\kappa$={kappa:.3g})")
      ax.plot(lam_fine, r.theory_fine.isel(lam_H=i), color=col, lw=1.2)
    ax.plot(lam_fine, calib, "k:", lw=1)
    ax.legend(fontsize=7)
  ax.set(xlabel=r"$\lambda$", ylabel="confidence", title="mixup CE: trained (markers) and closed form (lines)")
  ax.title.set_fontsize(9)
  ax = axs[2]
  ax.plot(results.kappa, results.theory_gap_mixup, color="C0", label="mixup CE (closed form)")
  ax.plot(results.kappa, results.theory_gap_plain, color="C3", label="plain CE, interpolated (closed form)")
  for s, key in (("mixup_ce", "C0"), ("plain_ce", "C3")):
    if s in results.setting.values:
      r = results.sel(setting=s)
      gap = np.nanmean(np.abs(r.confidence.values - np.maximum(lam, 1 - lam)), axis=(-3, -2, -1))  # seed, pair, lam
      ax.plot(a["K"] / (a["K"] - 1) / results.lam_H.values, gap, "o", color=key, ms=5,
              label=f"{_STYLE[s][1]}: trained ({lam.size}-point grid)")
  ax.set(xscale="log", yscale="log", xlabel=r"$\kappa = \rho^2 K / ((K-1)\lambda_H)$",
         ylabel=r"mean $|$confidence $- \max(\lambda, 1-\lambda)|$ over $\lambda$",
         title="calibration gap on mixed examples")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7)
  fig.suptitle(f"Fixed simplex-ETF classifier (rows of norm 1), d={a['d']}; mixup SGD {a['num_steps']} steps, "
               f"batch {a['batch_size']}, Polyak-averaged; " + (note or "every run converged"), fontsize=10)
  return fig
