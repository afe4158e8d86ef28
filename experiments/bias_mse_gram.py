r"""Bias vs no bias under MSE: orthogonal frame vs simplex ETF, as Gram matrices beside the predicted ones.

Balanced MSE-UFM solved by heavy-ball gradient descent (``num_seeds`` seeds vmapped). Without a
bias the class means and classifier rows form an orthogonal frame (Tirer & Bruna 2022, Thm. 3.1;
Zhou et al. 2022 discuss the bias-free case); with an unregularised bias they form a simplex ETF
(Zhou et al. 2022, Thm. 3.1; Han et al. 2022). With a *regularised* bias above the activation
level :math:`\lambda_b/(1+\lambda_b) > \sqrt{KN\lambda_W\lambda_H}` the features acquire a global
mean along a new direction and ``W`` leaves the ETF (derived in :func:`ufm.theory.mse_minimiser`,
confirmed by the reference solver; cf. the orthogonal-frame limit :math:`\lambda_b \to \infty`).
Shown per setting: :math:`WW^\top`, :math:`\bar H^\top\bar H` (uncentred class means) and
:math:`W\bar H`, solved (seed 0) beside :func:`ufm.theory.predict`, with the largest relative
Frobenius error over seeds.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common, runner

PAPER = "Tirer & Bruna 2022; Zhou et al. 2022"
FIGURE = ("checks Tirer & Bruna 2022 Thm. 3.1 (no bias) and Zhou et al. 2022 Thm. 3.1 (bias); the regularised-"
          "bias row is new")
RUNTIME = "55 s wall (load ~4, 2 cores shared with other jobs; 14 s CPU)"

#: Setting label -> (bias, lam_b source): lam_b is 0 or ``config.lam_b``.
_SETTINGS = {"no bias": (False, False), "bias": (True, False), "regularised bias": (True, True)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, n = 10, d = 8, lam_W = lam_H = 1e-3, lam_b = 0.05 (third setting), 8 seeds, 20 000 steps.
  ``"smoke"``: K = 3, 2 seeds, 40 steps."""
  c = ml_collections.ConfigDict()
  c.settings = ("no bias", "bias", "regularised bias")
  c.K, c.n, c.d = 4, 10, 8
  c.lam_W, c.lam_H, c.lam_b = 1e-3, 1e-3, 0.05  # activation: lam_b/(1+lam_b) > sqrt(K N lam_W lam_H) = 0.0126
  c.seed, c.num_seeds = 0, 8
  c.lr, c.momentum, c.init_scale = 0.5, 0.9, 0.1
  c.num_steps, c.log_every = 20_000, 1000
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.K, c.n, c.d, c.num_seeds, c.num_steps, c.log_every = 3, 2, 4, 2, 40, 20
  return c



def _grams(params, problem):
  """``(W W^T, Hbar^T Hbar, W Hbar)`` with ``Hbar`` the uncentred class means (``d x K``)."""
  M = ufm.metrics.class_means(params.H, problem.labels, problem.K)[0]
  return params.W @ params.W.T, M.T @ M, params.W @ M


def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, seed, k, l)`` for the solved Grams, ``(setting, k, l)`` for the predicted ones."""
  settings = _common.check_settings(c.settings, allowed=_SETTINGS)
  dt = _common.dtype(c)
  problems = {s: ufm.make_problem(ufm.balanced_counts(c.K, c.n), d=c.d, lam_W=c.lam_W, lam_H=c.lam_H,
                                  lam_b=c.lam_b if _SETTINGS[s][1] else 0.0, loss="mse", bias=_SETTINGS[s][0],
                                  dtype=dt) for s in settings}
  preds = {s: ufm.predict(p) for s, p in problems.items()}
  _common.check_steps(c)
  hp = _common.gd_hparams(c)
  parts = []
  for s, problem in problems.items():
    res = ctx.sweep(f"bias_mse_gram[{s}]", ufm.gradient_descent, problem, hp, axes=ctx.axes, num_steps=c.num_steps,
                    log_every=c.log_every)
    ds = _common.sweep_dataset(res)
    grams = jax.vmap(lambda p, problem=problem: _grams(p, problem))(res.solution.params)
    pred = preds[s]
    for name, solved, predicted in zip(("gram_W", "gram_M", "logits_M"), grams,
                                       (pred.gram_W, pred.gram_M, pred.logits_M)):
      solved, predicted = np.asarray(solved), np.asarray(predicted, np.float64)
      ds[name] = (("seed", "k", "l"), solved)
      ds[f"pred_{name}"] = (("k", "l"), predicted)
      err = np.linalg.norm(solved - predicted, axis=(1, 2)) / np.linalg.norm(predicted)
      ds[f"relerr_{name}"] = ("seed", err)
    ds["geometry"] = pred.geometry
    ds["pred_objective"] = pred.objective
    ds["lam_b"] = float(problem.lam_b)
    parts.append(ds)
  out = xr.concat(parts, dim=xr.DataArray(list(settings), dims="setting", name="setting"))
  out.attrs.update(K=c.K, n=c.n, d=c.d, lam_W=c.lam_W, lam_H=c.lam_H)
  return out


_GRAMS = (("gram_W", "WWᵀ"), ("gram_M", "H̄ᵀH̄"), ("logits_M", "WH̄"))


def summary(results: xr.Dataset, c) -> dict:
  """Per setting: the geometry, the converged seeds, the largest relative Gram errors over them."""
  out = {"K": int(results.attrs["K"]), "n": int(results.attrs["n"]), "d": int(results.attrs["d"]),
         "lam_W": float(results.attrs["lam_W"]), "lam_H": float(results.attrs["lam_H"]),
         "seeds": int(results.sizes["seed"]), "settings": {}}
  for s in results.setting.values:
    r = results.sel(setting=s)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    out["settings"][str(s)] = dict(
        geometry=str(r.geometry.item()), lam_b=float(r.lam_b), converged=int(ok.sum()),
        **{name: float(r[f"relerr_{name}"].values[ok].max()) if ok.any() else None for name, _ in _GRAMS})
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v: "n/a" if v is None else f"{v:.0e}"
  parts = [f"{s} (λ_b = {S['lam_b']:g}): {S['geometry']}, {S['converged']}/{summary['seeds']} seeds converged, "
           + ", ".join(f"{label} {f(S[name])}" for name, label in _GRAMS)
           for s, S in summary["settings"].items()]
  return (f"{FIGURE} (the regularised-bias minimiser is derived in derivations §5, `ufm.theory.mse_minimiser`): "
          f"balanced MSE-UFM, K = {summary['K']}, n = {summary['n']}, "
          f"d = {summary['d']}, λ_W = {summary['lam_W']:g}, λ_H = {summary['lam_H']:g}, heavy-ball GD "
          f"({c.num_steps:,} steps, {summary['seeds']} seeds). Largest relative Frobenius error of the solved Grams "
          f"against the predicted ones over the converged seeds — " + "; ".join(parts) + ".")


def plot(results: xr.Dataset, c):
  """Rows: settings. Columns: (solved, predicted) for W W^T, Hbar^T Hbar and W Hbar; the first converged seed is
  drawn and the errors are over the converged seeds (:func:`experiments.runner.gate`)."""
  from matplotlib import pyplot as plt
  settings = list(results.setting.values)
  names = (("gram_W", r"$WW^\top$"), ("gram_M", r"$\bar H^\top\bar H$"), ("logits_M", r"$W\bar H$"))
  fig, axs = plt.subplots(len(settings), 6, figsize=(16, 2.9 * len(settings)), squeeze=False,
                          constrained_layout=True)
  notes = []
  for row, s in zip(axs, settings):
    r = results.sel(setting=s)
    ok, note = runner.gate(r.converged.values, r.diverged.values)
    notes += [f"{s}: {note}"] if note else []
    first = int(np.argmax(ok)) if ok.any() else 0
    for j, (name, label) in enumerate(names):
      solved, pred = r[name].values[first], r[f"pred_{name}"].values
      vmax = max(np.abs(pred).max(), np.abs(solved).max(), 1e-300)
      for ax, mat, what in ((row[2 * j], solved, f"solved, seed {int(r.seed.values[first])}"),
                            (row[2 * j + 1], pred, "predicted")):
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{label} {what}", fontsize=9)
      fig.colorbar(im, ax=row[2 * j + 1], shrink=0.8)
      err = r[f"relerr_{name}"].values[ok]
      row[2 * j].set_xlabel(f"max rel. error over converged seeds {err.max():.1e}" if err.size else
                            "no converged seed", fontsize=8)
    row[0].set_ylabel(f"{s}\n(lam_b={float(r.lam_b):g}): {r.geometry.item()}", fontsize=9)
  fig.suptitle(f"Balanced MSE-UFM, K={results.attrs['K']}, n={results.attrs['n']}, d={results.attrs['d']}, "
               f"$\\lambda_W$={results.attrs['lam_W']:g}, $\\lambda_H$={results.attrs['lam_H']:g}; gradient descent "
               f"({results.sizes['seed']} seeds) vs ufm.theory.predict; "
               + ("; ".join(notes) if notes else "every run converged"), fontsize=10)
  return fig
