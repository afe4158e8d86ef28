r"""The near-collapse theorem of Tirer, Huang & Niles-Weed (2023), Fig. 1 setting: measured vs predicted.

At the collapsed minimiser ``H0`` of the ``beta = 0`` vicinity problem
(:func:`ufm.theory.vicinity_base_point`), the linearised map :math:`F = dH^\star/dH_0`
(:func:`ufm.vicinity.linearised_map`, implicit differentiation, float64) has class blocks whose
extreme singular values the paper states to first order in :math:`1/\beta`:
:math:`\sigma_{\max}(F_{kk}) = 1`, :math:`\sigma_{\min}(F_{kk}) \approx 1 - \beta^{-1}\sqrt{\lambda_H/\lambda_W}`,
:math:`\sigma_{\max}(F_{k\tilde k}) \approx 2\beta^{-1}\lambda_H(1 - \sqrt{\lambda_H\lambda_W})`.
Plotted against :math:`\lambda_H` (``beta = 100`` and ``1000``, ``K = 4, d = 10, n = 10,
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
FIGURE = "Fig. 1 (near-collapse theorem)"
RUNTIME = "25 s"


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
      s_x = np.linalg.svd(np.asarray(vicinity.class_blocks(F[j], counts, 0, 1)), compute_uv=False)
      m = theory.vicinity_linearised_map(c.lam_W, lh, beta)
      for k, v in (("smax_kk", s_kk.max()), ("smin_kk", s_kk.min()), ("smax_cross", s_x[0]),
                   ("rank2_cross", s_x[1]), ("exact_smin_kk", m.smin_kk), ("exact_smax_cross", m.smax_cross),
                   ("first_smin_kk", m.smin_kk_first_order), ("first_smax_cross", m.smax_cross_first_order)):
        out[k][i, j] = v
  ds = xr.Dataset({k: (("beta", "lam_H"), v) for k, v in out.items()}, coords={"beta": betas, "lam_H": lam_H})
  ds.attrs.update(K=K, d=d, n=n, lam_W=c.lam_W)
  return ds


def plot(results: xr.Dataset, c):
  """Panels: sigma_min(F_kk); sigma_max(F_kk~); beta^2 x (measured - first order); |measured - exact|."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(1, 4, figsize=(17, 3.8), constrained_layout=True)
  lh = results.lam_H.values
  lam_W = results.attrs["lam_W"]
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
  axs[2].set(xscale="log", xlabel=r"$\lambda_H$", title=r"$\beta^2\times$(measured − first order)")
  axs[3].set(xscale="log", yscale="log", xlabel=r"$\lambda_H$",
             title=r"max |measured − exact| ($\sigma_{\max}(F_{kk}) = 1$ included)")
  for ax in axs:
    ax.legend(fontsize=7)
  fig.suptitle(f"Vicinity UFM at its collapsed point, K={results.attrs['K']}, d={results.attrs['d']}, "
               f"n={results.attrs['n']}, $\\lambda_W$={lam_W:.4g}: implicit Jacobian (float64) vs exact and "
               "first-order forms", fontsize=10)
  return fig
