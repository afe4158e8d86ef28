r"""How lam_H, lam_W and beta move the vicinity UFM's minimiser towards collapse (Tirer, Huang, Niles-Weed 2023).

``num_seeds`` near-collapsed inputs ``H0`` (orthogonal frame plus within- and between-class noise, one draw per
seed). For each, the float64 L-BFGS reference solver is vmapped over two grids (one call each, through
:func:`ufm.sweep.sweep`; the seeds reuse the compiled programs): :math:`(\lambda_W, \lambda_H)` at fixed
:math:`\beta`, and :math:`(\beta, \lambda_H)` at fixed :math:`\lambda_W`. The heatmaps show the distance to
collapse :math:`\mathrm{NC1}(H^\star)/\mathrm{NC1}(H_0)` (NC1 = tr Σ_W / tr Σ_B), averaged in log over the
seeds. The paper's Sec. 4 insight is that the feature regularisation acts on NC more than the classifier's; the
titles give, per axis, the decades the ratio moves across the grid (median over the other axis), as the mean and
standard deviation over the seeds, so a difference can be read against the spread of the inputs.

Source: Tirer, Huang, Niles-Weed, ICML 2023, arXiv 2210.16658 (regularisation effects; derivations §3.2).
"""

import jax
import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, _perturbation, runner
from ufm import vicinity

PAPER = _perturbation.PAPER
FIGURE = "new (UFM version of Tirer et al. 2023 Sec. 4's insight; their Fig. 3 trains a ResNet18)"
RUNTIME = "101 s wall (load ~9, 2 cores shared with other jobs; 40 s CPU)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, d = 10, n = 10, 9 x 9 log grids (lam in [1e-2, 1], beta in [0.1, 100]), 8 draws of H0.
  ``"smoke"``: 2 x 2, 2 draws."""
  c = _perturbation.base_config(arg)  # its lam_W is the fixed value of the (beta, lam_H) grid
  c.within, c.between, c.scale = 0.3, 0.1, 1.0
  c.lam_range, c.beta_range, c.num = (1e-2, 1.0), (0.1, 100.0), 9
  c.beta = 1.0  # the fixed value of the (lam_W, lam_H) grid
  c.gtol = 1e-10
  c.num_seeds = 8  # independent draws of H0: the spread the differences are read against
  if arg == "smoke":
    c.num, c.num_seeds = 2, 2
  return c


def _grid(c, key: str) -> np.ndarray:
  """``geomspace(low, high, c.num)`` for ``c[key] = (low, high)``, ``0 < low <= high``."""
  rng = c[key]
  if len(rng) != 2:
    raise ValueError(f"{key} = {rng!r}: allowed: (low, high) with 0 < low <= high")
  low, high = (float(v) for v in _common.positive(key, rng))
  if high < low:
    raise ValueError(f"{key} = {rng!r}: allowed: (low, high) with 0 < low <= high")
  return np.geomspace(low, high, _common.check_int("num", c.num, lo=2))


def sweep(c) -> dict:
  """Two vmapped grids: ``{"lam_W", "lam_H"}`` at ``beta``, and ``{"beta", "lam_H"}`` at ``lam_W``."""
  lams = _grid(c, "lam_range")
  return {"lam_W": lams, "beta": _grid(c, "beta_range"), "lam_H": lams}


def run(c, ctx) -> xr.Dataset:
  """Variables ``nc1_ratio_WH`` (dims ``seed, lam_W, lam_H``) and ``nc1_ratio_bH`` (dims ``seed, beta, lam_H``)."""
  K = _common.check_int("K", c.K, lo=2)
  d, n = _common.check_int("d", c.d, lo=K), _common.check_int("n", c.n, lo=2)
  seeds = _common.check_int("seed", c.seed, lo=0) + np.arange(_common.check_int("num_seeds", c.num_seeds))
  counts = ufm.balanced_counts(K, n)
  hp = ufm.lbfgs_hparams(init_scale=1e-6, gtol=c.gtol, dtype=_common.dtype(c))
  out, nc1_H0 = {}, []
  for seed in seeds:
    H0 = vicinity.noisy_collapsed_features(jax.random.key(int(seed)), counts, d, scale=c.scale, within=c.within,
                                           between=c.between)
    p = vicinity.make_vicinity_problem(H0, counts, lam_W=c.lam_W, lam_H=1.0, beta=c.beta, dtype=_common.dtype(c))
    nc1_H0.append(float(ufm.metrics.nc1_ratio(H0, p.labels, K)))
    for tag, names in (("WH", ("lam_W", "lam_H")), ("bH", ("beta", "lam_H"))):
      res = ctx.sweep(f"perturbation_regularisation[{tag},seed={seed}]", ufm.lbfgs_reference, p, hp,
                      axes={k: ctx.axes[k] for k in names})
      H = res.solution.params.H
      nc1 = jax.vmap(jax.vmap(lambda h: ufm.metrics.nc1_ratio(h, p.labels, K)))(H)
      for k, v in ((f"nc1_ratio_{tag}", np.asarray(nc1) / nc1_H0[-1]),
                   (f"converged_{tag}", np.asarray(res.solution.converged)),
                   (f"diverged_{tag}", np.asarray(res.solution.diverged)),
                   (f"norm_W_sq_{tag}", np.asarray((res.solution.params.W ** 2).sum(axis=(-1, -2))))):
        out.setdefault(k, ((("seed",) + names), []))[1].append(v)
  ds = xr.Dataset({k: (dims, np.stack(v)) for k, (dims, v) in out.items()},
                  coords=dict({k: v for k, v in ctx.axes.items()}, seed=seeds))
  ds["nc1_H0"] = ("seed", np.asarray(nc1_H0))
  ds.attrs.update(K=K, d=d, n=n, beta=c.beta, lam_W=c.lam_W, within=c.within, between=c.between)
  return ds


def _spans(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Decades the ratio moves along the first grid axis and along lam_H (median over the other axis), per seed:
  ``v`` is ``[seed, x, lam_H]`` (unconverged points NaN)."""
  lv = np.log10(v)
  along_x = np.nanmedian(np.nanmax(lv, 1) - np.nanmin(lv, 1), axis=-1)
  along_h = np.nanmedian(np.nanmax(lv, 2) - np.nanmin(lv, 2), axis=-1)
  return along_x, along_h


def _masked(results, tag):
  ok, note = runner.gate(results[f"converged_{tag}"].values, results[f"diverged_{tag}"].values)
  return np.where(ok, results[f"nc1_ratio_{tag}"].values, np.nan), note


def summary(results: xr.Dataset, c) -> dict:
  """Per grid: the decades moved along each axis, per seed, their mean and standard deviation, and in how many
  seeds lam_H moves the ratio more than the other axis."""
  out = {"K": int(results.attrs["K"]), "d": int(results.attrs["d"]), "n": int(results.attrs["n"]),
         "seeds": int(results.sizes["seed"]), "beta": float(results.attrs["beta"]),
         "lam_W": float(results.attrs["lam_W"]), "nc1_H0_min": float(results.nc1_H0.min()),
         "nc1_H0_max": float(results.nc1_H0.max()), "grids": {}}
  for tag, axis in (("WH", "lam_W"), ("bH", "beta")):
    v, _ = _masked(results, tag)
    sx, sh = _spans(v)
    ok = runner.gate(results[f"converged_{tag}"].values, results[f"diverged_{tag}"].values)[0]
    out["grids"][tag] = {"axis": axis, "runs": int(ok.size), "converged": int(ok.sum()),
                         "span_x_mean": float(sx.mean()), "span_x_sd": float(sx.std(ddof=1)) if sx.size > 1 else 0.0,
                         "span_h_mean": float(sh.mean()), "span_h_sd": float(sh.std(ddof=1)) if sh.size > 1 else 0.0,
                         "h_more": int((sh > sx).sum())}
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  parts = []
  for tag, G in summary["grids"].items():
    fixed = f"β = {summary['beta']:g}" if tag == "WH" else f"λ_W = {summary['lam_W']:.3g}"
    parts.append(f"at {fixed}: {G['converged']}/{G['runs']} solves converged; NC1(H*)/NC1(H0) moves "
                 f"{G['span_x_mean']:.3f} ± {G['span_x_sd']:.3f} decades along {G['axis']} and "
                 f"{G['span_h_mean']:.3f} ± {G['span_h_sd']:.3f} along λ_H (mean ± sd over the draws), λ_H moving it "
                 f"more in {G['h_more']} of {summary['seeds']} draws")
  return (f"{FIGURE}: vicinity UFM (MSE), K = {summary['K']}, d = {summary['d']}, n = {summary['n']}, "
          f"{summary['seeds']} draws of H0 (NC1(H0) from {summary['nc1_H0_min']:.3f} to {summary['nc1_H0_max']:.3f}), "
          "float64 L-BFGS on 9 × 9 log grids — " + "; ".join(parts) + ".")


def plot(results: xr.Dataset, c):
  """Two heatmaps of log10 NC1(H*)/NC1(H0) (mean over the draws of H0, unconverged points left out), with the
  decades moved along each axis (mean ± sd over the draws) in the titles."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(1, 2, figsize=(11.5, 4.5), constrained_layout=True)
  notes = []
  for ax, tag, (xn, yn), fixed in zip(axs, ("WH", "bH"), (("lam_W", "lam_H"), ("beta", "lam_H")),
                                      (f"β = {results.attrs['beta']:g}", f"λ_W = {results.attrs['lam_W']:.3g}")):
    v, note = _masked(results, tag)
    notes += [f"{tag}: {note}"] if note else []
    im = ax.pcolormesh(results[xn].values, results[yn].values, np.nanmean(np.log10(v), axis=0).T, shading="nearest",
                       cmap="magma")
    fig.colorbar(im, ax=ax, label="log10 NC1(H*) / NC1(H0), mean over draws")
    sx, sh = _spans(v)
    sd = lambda a: a.std(ddof=1) if a.size > 1 else 0.0
    ax.set(xscale="log", yscale="log", xlabel={"lam_W": r"$\lambda_W$", "beta": r"$\beta$"}[xn],
           ylabel=r"$\lambda_H$")
    ax.set_title(f"{fixed}: decades along x {sx.mean():.3f} ± {sd(sx):.3f},\nalong λ_H {sh.mean():.3f} ± {sd(sh):.3f}"
                 f" (λ_H more in {int((sh > sx).sum())}/{sx.size} draws)", fontsize=9)
  fig.suptitle(f"Vicinity UFM (MSE), K={results.attrs['K']}, d={results.attrs['d']}, n={results.attrs['n']}, "
               f"{results.sizes['seed']} draws of H0 = orthogonal frame + noise (within {results.attrs['within']:g}, "
               f"between {results.attrs['between']:g}); float64 L-BFGS per grid point; "
               + ("; ".join(notes) if notes else "every solve converged"), fontsize=9)
  return fig
