r"""The near-collapse theorem of Tirer, Huang & Niles-Weed (2023), Fig. 1 setting: measured vs predicted.

At the collapsed minimiser ``H0`` of the ``beta = 0`` vicinity problem
(:func:`ufm.theory.vicinity_base_point`), the linearised map :math:`F = dH^\star/dH_0`
(:func:`ufm.vicinity.linearised_map`, implicit differentiation, float64) has class blocks whose
extreme singular values the paper states to first order in :math:`1/\beta`:
:math:`\sigma_{\max}(F_{kk}) = 1`, :math:`\sigma_{\min}(F_{kk}) \approx 1 - \beta^{-1}\sqrt{\lambda_H/\lambda_W}`,
:math:`\sigma_{\max}(F_{k\tilde k}) \approx 2\beta^{-1}\lambda_H(1 - \sqrt{\lambda_H\lambda_W})`.
The first panel is the paper's Fig. 1: the whole sorted spectrum of :math:`F_{kk}` at ``beta = 100`` for several
:math:`\lambda_H`. Then, against :math:`\lambda_H` (``beta = 100`` and ``1000``, ``K = 4, d = 10, n = 10,
lam_W = sqrt(2)``): the measured values, the exact forms of
:func:`ufm.theory.vicinity_linearised_map`, the first-order forms, and the first-order error
times :math:`\beta^2` (constant in :math:`\beta` when the error is second order).

Source: Tirer, Huang, Niles-Weed, ICML 2023, arXiv 2210.16658, near-collapse theorem and Fig. 1
(theorem number UNVERIFIED; exact forms derived in derivations §10).
"""

import jax
import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, _perturbation
from ufm import theory, vicinity

PAPER = _perturbation.PAPER
FIGURE = ("reproduces Tirer et al. 2023 Fig. 1 (same setting: beta = 100, K = 4, d = 10, n = 10, lam_W = sqrt 2; their "
          "lam_H values are not stated) and checks their Thm. 4.2 (extreme singular values, first order in 1/beta)")
RUNTIME = "11 s wall (load ~4; warm compilation cache)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: the paper's Fig. 1 setting, 12 values of lam_H in [0.01, 0.6], beta in (100, 1000). ``"smoke"``: K = 2."""
  c = _perturbation.base_config(arg)
  c.lam_H_min, c.lam_H_max, c.num_lam_H = 0.01, 0.6, 12
  c.betas = (100.0, 1000.0)
  if arg == "smoke":
    c.num_lam_H, c.betas = 2, (100.0,)
  return c


def sweep(c) -> dict:
  """The vmapped axis ``lam_H`` (one ``vmap`` of the linearised map per ``beta``)."""
  lam_H = _common.log_grid(c, "lam_H_min", "lam_H_max", "num_lam_H")
  if lam_H[-1] * c.lam_W >= 1:
    raise ValueError(f"lam_H_max = {c.lam_H_max}: allowed: lam_H_max * lam_W < 1 (the base point is 0 beyond)")
  return {"lam_H": lam_H}


def run(c, ctx) -> xr.Dataset:
  """Dims ``(beta, lam_H)``: measured, exact and first-order singular values."""
  K = _common.check_int("K", c.K, lo=2)
  d, n = _common.check_int("d", c.d, lo=K + 1), _common.check_int("n", c.n, lo=2)
  ufm.problem.check_real("lam_W", c.lam_W, lo=0.0, lo_open=True)
  betas = _common.positive("betas", c.betas)
  lam_H = ctx.axes["lam_H"]
  counts = ufm.balanced_counts(K, n)
  key = jax.random.key(_common.check_int("seed", c.seed, lo=0))
  out = {k: np.zeros((len(betas), len(lam_H))) for k in
         ("smax_kk", "smin_kk", "smax_cross", "exact_smin_kk", "exact_smax_cross", "first_smin_kk",
          "first_smax_cross", "rank2_cross")}
  spectrum = np.zeros((len(betas), len(lam_H), d * n))  # every singular value of F_kk (their Fig. 1)
  for i, beta in enumerate(betas):
    problems, params = [], []
    for lh in lam_H:
      bp = theory.vicinity_base_point(K, n, d, c.lam_W, lh, key=key)
      problems.append(vicinity.make_vicinity_problem(bp.H0, counts, lam_W=c.lam_W, lam_H=lh, beta=beta))
      params.append(ufm.Params(W=bp.W0, H=bp.H0, b=np.zeros(K)))
    stack = lambda xs: jax.tree.map(lambda *a: np.stack(a), *xs)
    F = np.asarray(jax.vmap(vicinity.linearised_map)(stack(problems), stack(params)))
    for j, lh in enumerate(lam_H):
      s_kk = np.linalg.svd(np.asarray(vicinity.class_blocks(F[j], counts, 0, 0)), compute_uv=False)
      spectrum[i, j] = s_kk
      s_x = np.linalg.svd(np.asarray(vicinity.class_blocks(F[j], counts, 0, 1)), compute_uv=False)
      m = theory.vicinity_linearised_map(c.lam_W, lh, beta)
      for k, v in (("smax_kk", s_kk.max()), ("smin_kk", s_kk.min()), ("smax_cross", s_x[0]),
                   ("rank2_cross", s_x[1]), ("exact_smin_kk", m.smin_kk), ("exact_smax_cross", m.smax_cross),
                   ("first_smin_kk", m.smin_kk_first_order), ("first_smax_cross", m.smax_cross_first_order)):
        out[k][i, j] = v
  ds = xr.Dataset({k: (("beta", "lam_H"), v) for k, v in out.items()}, coords={"beta": betas, "lam_H": lam_H})
  ds["spectrum_kk"] = (("beta", "lam_H", "index"), spectrum)
  ds = ds.assign_coords(index=np.arange(1, d * n + 1))
  ds.attrs.update(K=K, d=d, n=n, lam_W=c.lam_W)
  return ds


def summary(results: xr.Dataset, c) -> dict:
  """The largest |measured - exact form|, the largest relative error of the paper's first-order forms per beta, and
  how far beta^2 x (measured - first order) changes between the betas (second-order error: it should not)."""
  err_exact = max(float(np.max(np.abs(results[a] - results[b]))) for a, b in
                  (("smin_kk", "exact_smin_kk"), ("smax_cross", "exact_smax_cross")))
  out = {"K": int(results.attrs["K"]), "d": int(results.attrs["d"]), "n": int(results.attrs["n"]),
         "lam_W": float(results.attrs["lam_W"]), "lam_H_min": float(results.lam_H.min()),
         "lam_H_max": float(results.lam_H.max()), "num_lam_H": int(results.sizes["lam_H"]),
         "err_exact": max(err_exact, float(np.max(np.abs(results.smax_kk - 1.0)))), "betas": {}}
  scaled = {}
  for beta in results.beta.values:
    r = results.sel(beta=beta)
    rel = lambda m, f: float(np.max(np.abs(r[m] - r[f]) / np.abs(r[m])))
    out["betas"][f"{beta:g}"] = {"rel_first_smin_gap": float(np.max(np.abs((1 - r.smin_kk) - (1 - r.first_smin_kk))
                                                                     / np.abs(1 - r.smin_kk))),
                                 "rel_first_smax_cross": rel("smax_cross", "first_smax_cross")}
    sv = r.spectrum_kk.values  # [lam_H, index]
    out["betas"][f"{beta:g}"].update(
        ones_min=int((np.abs(sv - 1) <= 1e-10).sum(1).min()), ones_max=int((np.abs(sv - 1) <= 1e-10).sum(1).max()),
        levels_max=int(max(len(np.unique(np.round(row, 8))) for row in sv)), size=int(sv.shape[1]))
    scaled[beta] = beta**2 * np.concatenate([(r.smin_kk - r.first_smin_kk).values,
                                             (r.smax_cross - r.first_smax_cross).values])
  b = sorted(scaled)
  out["scaled_change"] = (float(np.max(np.abs(scaled[b[-1]] - scaled[b[0]])) / np.max(np.abs(scaled[b[-1]])))
                          if len(b) > 1 else None)
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  per = "; ".join(f"β = {beta}: {B['rel_first_smin_gap']:.1e} for 1 − σ_min(F_kk), {B['rel_first_smax_cross']:.1e} "
                  "for σ_max(F_kk̃)" for beta, B in summary["betas"].items())
  change = summary["scaled_change"]
  b0, B0 = next(iter(summary["betas"].items()))
  spec = (f"At β = {b0} the spectrum of F_kk ({B0['size']} singular values) has between {B0['ones_min']} and "
          f"{B0['ones_max']} values equal to 1 (to 1e-10) and at most {B0['levels_max']} distinct levels (to 1e-8)"
          + (": the step shape of their Fig. 1. " if B0["levels_max"] <= B0["size"] // 4 else ". "))
  return (f"{FIGURE}: the first-order singular values of the linearised map F = ∂H*/∂H0 at the collapsed point "
          f"against the measured ones and exact forms derived in derivations §10: "
          f"K = {summary['K']}, d = {summary['d']}, n = {summary['n']}, λ_W = {summary['lam_W']:.4g}, "
          f"{summary['num_lam_H']} values λ_H ∈ [{summary['lam_H_min']:g}, {summary['lam_H_max']:g}], implicit "
          f"differentiation in float64 (no iterative solve). " + spec + "Measured and exact forms agree to "
          f"{summary['err_exact']:.0e} (absolute, σ_max(F_kk) = 1 included). The paper's first-order forms are off by "
          f"(relative, largest over λ_H) {per}"
          + (f"; β² × (measured − first order) changes by {change:.0e} (relative) between the two β, so the "
             "first-order error is second order in 1/β, as stated." if change is not None else "."))


def plot(results: xr.Dataset, c):
  """Panels: sigma_min(F_kk); sigma_max(F_kk~); beta^2 x (measured - first order); |measured - exact|."""
  from matplotlib import pyplot as plt
  fig, grid = plt.subplots(2, 3, figsize=(15, 8.4), constrained_layout=True)
  ax0, axs = grid[0, 0], [grid[0, 1], grid[0, 2], grid[1, 0], grid[1, 1]]
  grid[1, 2].axis("off")
  lh = results.lam_H.values
  lam_W = results.attrs["lam_W"]
  beta0 = results.beta.values[0]
  picks = np.unique(np.linspace(0, len(lh) - 1, min(5, len(lh))).round().astype(int))
  cmap = plt.get_cmap("viridis")
  for k, j in enumerate(picks):
    sv = results.spectrum_kk.sel(beta=beta0).values[j]
    ax0.plot(results.index.values, sv, drawstyle="steps-mid", color=cmap(k / max(len(picks) - 1, 1)),
             label=f"$\\lambda_H$={lh[j]:.3g}")
  ax0.set(xlabel="index (sorted)", ylabel="singular value",
          title=f"spectrum of $F_{{kk}}$, β={beta0:g} (their Fig. 1 setting)")
  ax0.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
  for i, beta in enumerate(results.beta.values):
    r = results.sel(beta=beta)
    col = f"C{i}"
    axs[0].plot(lh, 1 - r.smin_kk, "o", color=col, mfc="none", label=f"measured, β={beta:g}")
    axs[0].plot(lh, 1 - r.exact_smin_kk, "-", color=col, lw=1, label="exact form")
    axs[0].plot(lh, 1 - r.first_smin_kk, "--", color=col, lw=1, label=r"paper: $\beta^{-1}\sqrt{\lambda_H/\lambda_W}$")
    axs[1].plot(lh, r.smax_cross, "o", color=col, mfc="none", label=f"measured, β={beta:g}")
    axs[1].plot(lh, r.exact_smax_cross, "-", color=col, lw=1, label="exact form")
    axs[1].plot(lh, r.first_smax_cross, "--", color=col, lw=1, label=r"paper: $2\beta^{-1}\lambda_H(1-c)$")
    axs[2].plot(lh, beta**2 * (r.smin_kk - r.first_smin_kk), "o-", color=col, ms=4,
                label=rf"$\sigma_{{\min}}(F_{{kk}})$, β={beta:g}")
    axs[2].plot(lh, beta**2 * (r.smax_cross - r.first_smax_cross), "s--", color=col, ms=4,
                label=rf"$\sigma_{{\max}}(F_{{k\tilde k}})$, β={beta:g}")
    err = np.maximum.reduce([np.abs(r.smin_kk - r.exact_smin_kk), np.abs(r.smax_cross - r.exact_smax_cross),
                             np.abs(r.smax_kk - 1.0)])
    axs[3].plot(lh, np.maximum(err, 1e-17), "o-", color=col, ms=4, label=f"β={beta:g}")
  c_ = np.sqrt(lh * lam_W)
  axs[2].plot(lh, lh / lam_W, "k:", lw=1, label=r"$\lambda_H/\lambda_W$ (2nd order)")
  axs[2].plot(lh, -8 * lh**2 * (1 - c_) ** 2, "k-.", lw=1, label=r"$-8\lambda_H^2(1-c)^2$")
  axs[0].set(xscale="log", yscale="log", xlabel=r"$\lambda_H$", title=r"$1 - \sigma_{\min}(F_{kk})$")
  axs[1].set(xscale="log", yscale="log", xlabel=r"$\lambda_H$", title=r"$\sigma_{\max}(F_{k\tilde k})$")
  axs[2].set(xscale="log", xlabel=r"$\lambda_H$", title=r"$\beta^2\times$(measured − first order)" + "\n(second order: the β curves coincide)")
  axs[3].set(xscale="log", yscale="log", xlabel=r"$\lambda_H$",
             title=r"max |measured − exact| ($\sigma_{\max}(F_{kk}) = 1$ included)")
  for ax in axs:  # below the axes, off the data
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
  fig.suptitle(f"Vicinity UFM at its collapsed point, K={results.attrs['K']}, d={results.attrs['d']}, "
               f"n={results.attrs['n']}, $\\lambda_W$={lam_W:.4g}: implicit Jacobian (float64) vs exact and "
               "first-order forms (no iterative solve)", fontsize=10)
  return fig
