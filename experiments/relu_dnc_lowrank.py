r"""Deep UFM with ReLU layers: is deep neural collapse optimal? Best multi-start solve vs the DNC value over K and L.

Checks Súkeník, Mondelli, Lampert 2023 (arXiv 2305.13165; DNC is globally optimal for K = 2, any depth) and 2024
(arXiv 2405.14468; beyond two layers or two classes DNC stops being optimal, low-rank solutions beat it): for each
number of classes ``K`` and layers ``L`` the balanced MSE DUFM (:mod:`ufm.relu_deep`, widths ``K``) is solved by
float64 L-BFGS from ``restarts`` random starts (vmapped); the best objective is compared with the best DNC
configuration (:func:`ufm.theory.relu_dnc`, derivations §14), and the singular values of the best solve's class
means show its rank at every layer. A best objective below the DNC value is a solution better than every DNC
configuration (whether or not the solve converged: the objective is evaluated exactly).
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common
from ufm import relu_deep

PAPER = "Súkeník, Mondelli & Lampert 2023; 2024"
FIGURE = "checks Súkeník et al. 2023 (DNC optimal, K = 2) and 2024 (low rank beats DNC beyond two layers/classes)"
RUNTIME = "684 s (compile 615 s; shared CPU under load)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K in {2, 3, 4, 6}, L in {2, 3, 4}, n = 2, lam_W = lam_H = 1e-3, 8 starts, 5000 iterations.
  ``"smoke"``: K = 2, L = 2, 2 starts, 20 iterations."""
  c = ml_collections.ConfigDict()
  c.Ks = (2, 3, 4, 6)
  c.Ls = (2, 3, 4)
  c.n = 2
  c.lam_W, c.lam_H = 1e-3, 1e-3
  c.seed, c.num_seeds, c.init_scale = 0, 8, 0.3
  c.max_steps, c.gtol = 5000, 1e-10
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.Ks, c.Ls, c.num_seeds, c.max_steps = (2,), (2,), 2, 20
  return c


def run(c, ctx) -> xr.Dataset:
  """Dims ``(K, L, seed)`` for the solves, ``(K, L)`` for the DNC value, ``(K, L, layer, k)`` for the normalised
  singular values of the best solve's class means (layers ``1..L`` and the output, NaN-padded to ``max K``)."""
  Ks = tuple(_common.check_int("Ks[i]", K, lo=2) for K in c.Ks)
  Ls = tuple(_common.check_int("Ls[i]", L, lo=1, hi=16) for L in c.Ls)
  if not Ks or not Ls:
    raise ValueError("Ks and Ls must be non-empty tuples of integers (K >= 2, 1 <= L <= 16)")
  n = _common.check_int("n", c.n)
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  dt = _common.dtype(c)
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=c.gtol, dtype=dt)
  S = len(ctx.axes["seed"])
  Kmax, Lmax = max(Ks), max(Ls)
  f = np.full((len(Ks), len(Ls), S), np.nan)
  conv = np.zeros((len(Ks), len(Ls), S), bool)
  div = np.zeros((len(Ks), len(Ls), S), bool)
  dnc = np.full((len(Ks), len(Ls)), np.nan)
  sv = np.full((len(Ks), len(Ls), Lmax + 1, Kmax), np.nan)
  for i, K in enumerate(Ks):
    for j, L in enumerate(Ls):
      p = relu_deep.make_relu_problem((n,) * K, lam_W=c.lam_W, lam_H=c.lam_H, d=K, depth=L, dtype=dt)
      res = ctx.sweep(f"relu_dnc_lowrank[K={K},L={L}]", ufm.lbfgs_reference, p, hp, axes=ctx.axes,
                      max_steps=c.max_steps)
      sol = res.solution
      f[i, j], conv[i, j], div[i, j] = (np.asarray(x) for x in (sol.objective, sol.converged, sol.diverged))
      dnc[i, j] = ufm.theory.predict(p).objective
      best = int(np.argmin(np.where(div[i, j], np.inf, f[i, j])))
      params = jax.tree.map(lambda x, b=best: x[b], sol.params)
      for l, s in enumerate(relu_deep.class_mean_singular_values(params, p)):
        s = np.asarray(s)
        sv[i, j, l if l < L else Lmax, :K] = s / s[0] if s[0] > 0 else s
  return xr.Dataset(
      {"objective": (("K", "L", "seed"), f), "converged": (("K", "L", "seed"), conv),
       "diverged": (("K", "L", "seed"), div), "dnc_objective": (("K", "L"), dnc),
       "class_mean_sv": (("K", "L", "layer", "k"), sv)},
      coords={"K": list(Ks), "L": list(Ls), "seed": np.asarray(ctx.axes["seed"]), "layer": np.arange(1, Lmax + 2),
              "k": np.arange(Kmax)},
      attrs=dict(n=n, lam_W=c.lam_W, lam_H=c.lam_H))


def plot(results: xr.Dataset, c):
  """Left: relative gap (best start - DNC) / DNC per (K, L) (negative: a solution better than DNC). Right: the
  normalised singular values of the best solve's class means at the last hidden layer ``H_L``, per (K, L)."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True)
  Ks, Ls = results.K.values, results.L.values
  best = np.nanmin(np.where(results.diverged.values, np.nan, results.objective.values), axis=-1)
  gap = (best - results.dnc_objective.values) / results.dnc_objective.values
  ax = axs[0]
  lim = min(max(np.nanmax(np.abs(gap)), 1e-6), 0.1)  # colours saturate at +-10%; the text gives the value
  im = ax.imshow(gap, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
  fig.colorbar(im, ax=ax, label="(f_best - f_DNC) / f_DNC (colour clipped at ±0.1)")
  for i in range(len(Ks)):
    for j in range(len(Ls)):
      nconv = int(results.converged.values[i, j].sum())
      ax.text(j, i, f"{gap[i, j]:+.2e}\n{nconv}/{results.sizes['seed']} conv.", ha="center", va="center", fontsize=8)
  ax.set(xticks=range(len(Ls)), xticklabels=Ls, yticks=range(len(Ks)), yticklabels=Ks, xlabel="layers L",
         ylabel="classes K", title="best of the starts vs the best DNC configuration")
  ax = axs[1]
  for i, K in enumerate(Ks):
    for j, L in enumerate(Ls):
      s = results.class_mean_sv.values[i, j, L - 1, :K]
      ax.plot(np.arange(1, K + 1), np.maximum(s, 1e-6), "o-", color=f"C{i}", alpha=0.4 + 0.6 * j / max(len(Ls) - 1, 1),
              label=f"K={K}, L={L}")
  ax.set(yscale="log", xlabel="index", ylabel=r"$\sigma_i / \sigma_1$ (floored at 1e-6)",
         title=r"singular values of the class means of $H_L$ (best start); DNC: all 1")
  ax.legend(fontsize=7, ncol=2)
  a = results.attrs
  fig.suptitle(f"MSE DUFM with ReLU, widths K, n={a['n']}, λ_W = λ_H = {a['lam_W']:g}; float64 L-BFGS, "
               f"{results.sizes['seed']} starts per cell; the best start is drawn whether or not it converged (an objective "
               "below the DNC value bounds the minimum either way); 'conv.' counts the converged starts", fontsize=10)
  return fig


def summary(results, c) -> dict:
  """Per (K, L): the best converged start's objective relative to the best DNC value, and how many starts converged."""
  rows = []
  for K in results.K.values:
    for L in results.L.values:
      r = results.sel(K=K, L=L)
      ok = r.converged.values & ~r.diverged.values
      best = float(r.objective.values[ok].min()) if ok.any() else None
      dnc = float(r.dnc_objective)
      every = float(np.min(r.objective.values[~r.diverged.values])) if (~r.diverged.values).any() else None
      rows.append({"K": int(K), "L": int(L), "converged": int(ok.sum()), "runs": int(ok.size),
                   "rel": None if best is None else (best - dnc) / abs(dnc),
                   "rel_any": None if every is None else (every - dnc) / abs(dnc)})
  return {"lam_W": float(results.attrs["lam_W"]), "lam_H": float(results.attrs["lam_H"]),
          "n": int(results.attrs["n"]), "rows": rows}


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  rows = summary["rows"]
  below = [R for R in rows if R["rel"] is not None and R["rel"] < -1e-9]
  at = [R for R in rows if R["rel"] is not None and abs(R["rel"]) <= 1e-9]
  above = [R for R in rows if R["rel"] is not None and R["rel"] > 1e-9]
  fmt = lambda Rs: ", ".join(f"K = {R['K']}, L = {R['L']} ({100 * R['rel']:+.1f} %)" for R in Rs) or "none"
  return (f"{FIGURE}: deep UFM with ReLU layers, n = {summary['n']}, λ_W = {summary['lam_W']:g}, λ_H = "
          f"{summary['lam_H']:g}, {rows[0]['runs']} float64 L-BFGS starts per (K, L), "
          f"{sum(R['converged'] for R in rows)}/{sum(R['runs'] for R in rows)} converged. Best converged start "
          f"against the best DNC value — below it (low rank beats DNC): {fmt(below)}; at it (to 1e-9): "
          f"{', '.join(f'K = {R[chr(75)]}, L = {R[chr(76)]}' for R in at) or 'none'}; above it (no start found DNC or "
          f"better): {fmt(above)}; no converged start: "
          f"{', '.join(f'K = {R[chr(75)]}, L = {R[chr(76)]}' for R in rows if R['rel'] is None) or 'none'}. Any start "
          f"whose objective is below the DNC value shows that DNC is not the global minimum there, converged or not; "
          f"counting the unconverged starts too, below it: "
          + (", ".join(f"K = {R['K']}, L = {R['L']} ({100 * R['rel_any']:+.1f} %)" for R in rows
                       if R["rel_any"] is not None and R["rel_any"] < -1e-9) or "none")
          + ".")
