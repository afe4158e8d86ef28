r"""How lam_H, lam_W and beta move the vicinity UFM's minimiser towards collapse (Tirer, Huang, Niles-Weed 2023).

One fixed near-collapsed input ``H0`` (orthogonal frame plus within- and between-class noise).
The float64 L-BFGS reference solver is vmapped over two grids (one call each, through
:func:`ufm.sweep.sweep`): :math:`(\lambda_W, \lambda_H)` at fixed :math:`\beta`, and
:math:`(\beta, \lambda_H)` at fixed :math:`\lambda_W`. The heatmaps show the distance to collapse
:math:`\mathrm{NC1}(H^\star)/\mathrm{NC1}(H_0)` (NC1 = tr Σ_W / tr Σ_B). The paper's claim 3 is
that the feature regularisation acts on NC more than the classifier's; the title of each panel
reports the range of the ratio along each axis.

Source: Tirer, Huang, Niles-Weed, ICML 2023, arXiv 2210.16658 (regularisation effects; derivations §3.2).
"""

import jax
import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, _perturbation
from ufm import vicinity

PAPER = _perturbation.PAPER
FIGURE = "new (UFM version of Tirer et al. 2023 Sec. 4's insight; their Fig. 3 trains a ResNet18)"
RUNTIME = "70 s"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, d = 10, n = 10, 9 x 9 log grids (lam in [1e-2, 1], beta in [0.1, 100]). ``"smoke"``: 2 x 2."""
  c = _perturbation.base_config(arg)  # its lam_W is the fixed value of the (beta, lam_H) grid
  c.within, c.between, c.scale = 0.3, 0.1, 1.0
  c.lam_range, c.beta_range, c.num = (1e-2, 1.0), (0.1, 100.0), 9
  c.beta = 1.0  # the fixed value of the (lam_W, lam_H) grid
  c.gtol = 1e-10
  if arg == "smoke":
    c.num = 2
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
  """Variables ``nc1_ratio_WH`` (dims ``lam_W, lam_H``) and ``nc1_ratio_bH`` (dims ``beta, lam_H``)."""
  K = _common.check_int("K", c.K, lo=2)
  d, n = _common.check_int("d", c.d, lo=K), _common.check_int("n", c.n, lo=2)
  counts = ufm.balanced_counts(K, n)
  H0 = vicinity.noisy_collapsed_features(jax.random.key(_common.check_int("seed", c.seed, lo=0)), counts, d,
                                         scale=c.scale, within=c.within, between=c.between)
  p = vicinity.make_vicinity_problem(H0, counts, lam_W=c.lam_W, lam_H=1.0, beta=c.beta, dtype=_common.dtype(c))
  hp = ufm.lbfgs_hparams(init_scale=1e-6, gtol=c.gtol, dtype=_common.dtype(c))
  nc1_H0 = float(ufm.metrics.nc1_ratio(H0, p.labels, K))
  ds = xr.Dataset(coords={k: v for k, v in ctx.axes.items()})
  for tag, names in (("WH", ("lam_W", "lam_H")), ("bH", ("beta", "lam_H"))):
    res = ctx.sweep(f"perturbation_regularisation[{tag}]", ufm.lbfgs_reference, p, hp,
                    axes={k: ctx.axes[k] for k in names})
    H = res.solution.params.H
    nc1 = jax.vmap(jax.vmap(lambda h: ufm.metrics.nc1_ratio(h, p.labels, K)))(H)
    ds[f"nc1_ratio_{tag}"] = (names, np.asarray(nc1) / nc1_H0)
    ds[f"converged_{tag}"] = (names, np.asarray(res.solution.converged))
    ds[f"diverged_{tag}"] = (names, np.asarray(res.solution.diverged))
    ds[f"norm_W_sq_{tag}"] = (names, np.asarray((res.solution.params.W ** 2).sum(axis=(-1, -2))))
  ds.attrs.update(K=K, d=d, n=n, beta=c.beta, lam_W=c.lam_W, within=c.within, between=c.between, nc1_H0=nc1_H0)
  return ds


def plot(results: xr.Dataset, c):
  """Two heatmaps of log10 NC1(H*)/NC1(H0), with the spread along each axis in the titles."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(1, 2, figsize=(11, 4.3), constrained_layout=True)
  for ax, tag, (xn, yn), fixed in zip(axs, ("WH", "bH"), (("lam_W", "lam_H"), ("beta", "lam_H")),
                                      (f"β = {results.attrs['beta']:g}", f"λ_W = {results.attrs['lam_W']:.3g}")):
    v = results[f"nc1_ratio_{tag}"].values
    im = ax.pcolormesh(results[xn].values, results[yn].values, np.log10(np.maximum(v, 1e-300)).T, shading="nearest",
                       cmap="magma")
    fig.colorbar(im, ax=ax, label="log10 NC1(H*) / NC1(H0)")
    span_x = np.nanmedian(np.log10(v.max(0) / v.min(0)))  # decades moved along x (median over y)
    span_y = np.nanmedian(np.log10(v.max(1) / v.min(1)))
    bad = ~results[f"converged_{tag}"].values
    if bad.any():
      ii, jj = np.nonzero(bad)
      ax.scatter(results[xn].values[ii], results[yn].values[jj], marker="x", color="cyan", s=14,
                 label="not converged")
      ax.legend(fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel={"lam_W": r"$\lambda_W$", "beta": r"$\beta$"}[xn],
           ylabel=r"$\lambda_H$")
    ax.set_title(f"{fixed}: decades along x {span_x:.3f}, along λ_H {span_y:.3f}", fontsize=9)
  fig.suptitle(f"Vicinity UFM (MSE), K={results.attrs['K']}, d={results.attrs['d']}, n={results.attrs['n']}, "
               f"H0 = orthogonal frame + noise (within {results.attrs['within']:g}, between "
               f"{results.attrs['between']:g}; NC1(H0) = {results.attrs['nc1_H0']:.3g}); float64 L-BFGS per grid "
               "point, one vmapped call per grid", fontsize=9)
  return fig
