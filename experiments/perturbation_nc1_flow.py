r"""Within-class variability of the optimised features against the input's (Tirer, Huang, Niles-Weed 2023).

``H0`` is a near-collapsed input: the collapsed minimiser of the ``beta = 0`` problem
(:func:`ufm.theory.vicinity_base_point`'s scale, orthogonal frame) plus Gaussian within-class
noise of standard deviation ``within`` (the swept noise level) and between-class noise
``between``. For a grid of noise levels and :math:`\beta` (vmapped), the figure shows

* along the gradient flow on the central path from :math:`H_0`
  (:func:`ufm.vicinity.central_path_flow`): :math:`\mathrm{NC1} = \mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B`
  relative to the input's (claim 1 of the paper: it decreases);
* at the minimiser (float64 L-BFGS): NC1 of :math:`H^\star` over NC1 of :math:`H_0`, and
  :math:`\mathrm{tr}\Sigma_W(H^\star)/\mathrm{tr}\Sigma_W(H_0)` under the bound
  :math:`(\beta/(\beta + \lambda_H))^2` of the contraction identity
  (:func:`ufm.theory.contraction_map`).

Source: Tirer, Huang, Niles-Weed, ICML 2023, arXiv 2210.16658 (within-class variability along the
central path; model in the paper's normalisation, derivations §3.4, §10).
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, runner, _perturbation
from ufm import theory, vicinity

PAPER = _perturbation.PAPER
FIGURE = "checks Tirer et al. 2023 Thm. 3.1 and Cor. 3.2 (NC1 decreases along the central path)"
RUNTIME = "45 s wall (load ~4, 2 cores shared with other jobs; 16 s CPU)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, d = 10, n = 10, lam_W = sqrt(2), lam_H = 0.3, 6 noise levels x 6 betas. ``"smoke"``: 2 x 2."""
  c = _perturbation.base_config(arg)
  c.lam_H = 0.3
  c.withins = (0.03, 0.06, 0.1, 0.2, 0.4, 0.8)
  c.between = 0.05
  c.betas = (0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
  c.flow_time, c.flow_steps, c.log_every = 20.0, 4000, 40
  c.gtol = 1e-10
  if arg == "smoke":
    c.withins, c.betas = (0.1, 0.3), (1.0, 10.0)
    c.flow_time, c.flow_steps, c.log_every = 0.5, 40, 10
  return c


def sweep(c) -> dict:
  """The vmapped axes: noise level ``within`` (outer) and ``beta``."""
  return {"within": _common.positive("withins", c.withins), "beta": _common.positive("betas", c.betas)}


def run(c, ctx) -> xr.Dataset:
  """Dims ``(within, beta, time)`` for the flow, ``(within, beta)`` for the minimiser."""
  K = _common.check_int("K", c.K, lo=2)
  d, n = _common.check_int("d", c.d, lo=K), _common.check_int("n", c.n, lo=2)
  _common.check_int("flow_steps", c.flow_steps, hi=10**6)
  _common.check_int("log_every", c.log_every)
  if c.flow_steps % c.log_every:
    raise ValueError(f"flow_steps = {c.flow_steps}, log_every = {c.log_every}: allowed: a multiple of log_every")
  flow_time = float(ufm.problem.check_real("flow_time", c.flow_time, lo=0.0, lo_open=True))
  between = float(ufm.problem.check_real("between", c.between, lo=0.0))
  counts = ufm.balanced_counts(K, n)
  bp = theory.vicinity_base_point(K, n, d, c.lam_W, c.lam_H)  # validates lam_W, lam_H (> 0, product < 1)
  key = jax.random.key(_common.check_int("seed", c.seed, lo=0))
  base = vicinity.make_vicinity_problem(bp.H0, counts, lam_W=c.lam_W, lam_H=c.lam_H, beta=1.0)
  hp = ufm.lbfgs_hparams(init_scale=1e-6, gtol=c.gtol)
  step = flow_time / c.flow_steps
  if step * (1 + ctx.axes["beta"].max() + c.lam_H + bp.a2) > 1.0:  # explicit Euler: N dt x curvature < 2 with margin
    raise ValueError(f"flow_time / flow_steps = {step:g} is too large for beta = {ctx.axes['beta'].max()}; "
                     f"allowed: flow_steps >= {math.ceil(flow_time * (1 + ctx.axes['beta'].max() + c.lam_H + bp.a2))}")

  def H0_of(within):
    return vicinity.noisy_collapsed_features(key, counts, d, scale=math.sqrt(bp.b2), within=within, between=between)

  def one(within, beta):
    p = base.replace(H0=H0_of(within), beta=beta)
    sol = ufm.lbfgs_reference(jax.random.key(0), p, hp)
    _, tr = vicinity.central_path_flow(p, step_size=step, num_steps=c.flow_steps, log_every=c.log_every)
    nc1 = lambda H: ufm.metrics.nc1_ratio(H, p.labels, K)
    trw = lambda H: jnp.trace(vicinity.within_class_covariance(H, p.labels, K))
    return dict(flow_nc1=tr.nc1_ratio, flow_objective=tr.objective, flow_tr_sigma_W=tr.tr_sigma_W,
                nc1_H0=nc1(p.H0), nc1_star=nc1(sol.params.H), tr_sigma_W_H0=trw(p.H0),
                tr_sigma_W_star=trw(sol.params.H), converged=sol.converged, grad_norm=sol.grad_norm,
                diverged=sol.diverged | ~jnp.all(jnp.isfinite(tr.objective)))

  dt = _common.dtype(c)
  out = jax.jit(jax.vmap(jax.vmap(one, (None, 0)), (0, None)))(jnp.asarray(ctx.axes["within"], dt),
                                                                 jnp.asarray(ctx.axes["beta"], dt))
  dims2 = ("within", "beta")
  data = {k: (dims2 + (("time",) if k.startswith("flow_") else ()), np.asarray(v)) for k, v in out.items()}
  times = step * c.log_every * np.arange(c.flow_steps // c.log_every + 1)
  ds = xr.Dataset(data, coords={"within": ctx.axes["within"], "beta": ctx.axes["beta"], "time": times})
  ds["bound"] = ("beta", (ctx.axes["beta"] / (ctx.axes["beta"] + c.lam_H)) ** 2)
  ds.attrs.update(K=K, d=d, n=n, lam_W=c.lam_W, lam_H=c.lam_H, between=between)
  return ds


def summary(results: xr.Dataset, c) -> dict:
  """Claim 1 (NC1 decreases along the central-path flow): its largest step-to-step increase; at the converged
  minimisers, the range of NC1(H*)/NC1(H0) and the largest excess of the trace ratio over the contraction bound."""
  ok, _ = runner.gate(results.converged.values, results.diverged.values)
  flow = results.flow_nc1.values / results.flow_nc1.values[..., :1]
  ratio = (results.nc1_star / results.nc1_H0).values[ok]
  excess = (results.tr_sigma_W_star / results.tr_sigma_W_H0 - results.bound).values[ok]
  return {"K": int(results.attrs["K"]), "d": int(results.attrs["d"]), "n": int(results.attrs["n"]),
          "lam_W": float(results.attrs["lam_W"]), "lam_H": float(results.attrs["lam_H"]),
          "within": [float(w) for w in results.within.values], "betas": [float(b) for b in results.beta.values],
          "runs": int(ok.size), "converged": int(ok.sum()),
          "flow_max_increase": float(np.max(np.diff(flow, axis=-1))),
          "flow_final_min": float(flow[..., -1].min()), "flow_final_max": float(flow[..., -1].max()),
          "ratio_min": float(ratio.min()) if ratio.size else None,
          "ratio_max": float(ratio.max()) if ratio.size else None,
          "bound_excess": float(excess.max()) if excess.size else None}


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v, spec: "n/a" if v is None else format(v, spec)
  grow = summary["flow_max_increase"]
  return (f"{FIGURE}, and the contraction bound of derivations §10: vicinity UFM (MSE), K = {summary['K']}, d = {summary['d']}, "
          f"n = {summary['n']}, λ_W = {summary['lam_W']:.3g}, λ_H = {summary['lam_H']:g}, within-class noise "
          f"{', '.join(f'{w:g}' for w in summary['within'])} × β ∈ {{{', '.join(f'{b:g}' for b in summary['betas'])}}}. "
          f"Along the flow, NC1 = tr Σ_W / tr Σ_B relative to the input's "
          + ("never increases (no logged step raises it)" if grow <= 0 else
             f"increases somewhere by up to {grow:.1e} (a counterexample to claim 1 at these settings)")
          + f" and ends between {summary['flow_final_min']:.3f} and {summary['flow_final_max']:.3f}. At the "
          f"{summary['converged']} of {summary['runs']} minimisers that converged (float64 L-BFGS), NC1(H*)/NC1(H0) "
          f"lies in [{f(summary['ratio_min'], '.3f')}, {f(summary['ratio_max'], '.3f')}] and tr Σ_W(H*)/tr Σ_W(H0) "
          + (f"stays below the bound (β/(β+λ_H))², by at least {-summary['bound_excess']:.1e}."
             if summary["bound_excess"] is not None and summary["bound_excess"] < 0 else
             f"exceeds the bound (β/(β+λ_H))² by up to {f(summary['bound_excess'], '.1e')}."))


def plot(results: xr.Dataset, c):
  """Panels: NC1 along the flow (middle noise level; log time axis, from the first logged time); NC1(H*)/NC1(H0)
  vs noise; trace ratio vs beta under the bound. Minimisers that did not converge are left out (and counted)."""
  from matplotlib import pyplot as plt
  from matplotlib.ticker import NullFormatter
  fig, axs = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
  w_mid = results.within.values[len(results.within) // 2]
  mask, note = runner.gate(results.converged.values, results.diverged.values)
  ok = xr.DataArray(mask, dims=results.converged.dims, coords={d: results[d] for d in results.converged.dims})
  for i, beta in enumerate(results.beta.values):
    r = results.sel(within=w_mid, beta=beta)
    axs[0].plot(results.time.values[1:], (r.flow_nc1 / r.flow_nc1[0])[1:], color=f"C{i}", label=f"β={beta:g}")
    rr = results.sel(beta=beta)
    keep = ok.sel(beta=beta).values
    axs[1].plot(results.within.values[keep], (rr.nc1_star / rr.nc1_H0).values[keep], "o-", color=f"C{i}", ms=4,
                label=f"β={beta:g}")
  for j, w in enumerate(results.within.values):
    rr = results.sel(within=w)
    keep = ok.sel(within=w).values
    axs[2].plot(results.beta.values[keep], (rr.tr_sigma_W_star / rr.tr_sigma_W_H0).values[keep], "o", color=f"C{j}",
                ms=4, mfc="none", label=f"within={w:g}")
  bb = np.geomspace(results.beta.values.min(), results.beta.values.max(), 200)
  axs[2].plot(bb, (bb / (bb + results.attrs["lam_H"])) ** 2, "k--", lw=1, label=r"bound $(\beta/(\beta+\lambda_H))^2$")
  axs[0].set(xlabel="flow time (log scale; at t = 0 the ratio is 1)", ylabel="NC1(H(t)) / NC1(H0)", xscale="log",
             title=f"central-path flow from H0 (within = {w_mid:g})")
  axs[1].set(xscale="log", xlabel="within-class noise of H0", ylabel="NC1(H*) / NC1(H0)",
             title="at the minimiser (L-BFGS)")
  axs[2].set(xscale="log", xlabel=r"$\beta$", ylabel=r"tr $\Sigma_W(H^*)$ / tr $\Sigma_W(H_0)$",
             title="contraction of the within-class covariance")
  axs[1].xaxis.set_minor_formatter(NullFormatter())
  for ax in axs:
    ax.legend(fontsize=7)
  fig.suptitle(f"Vicinity UFM (MSE), K={results.attrs['K']}, d={results.attrs['d']}, n={results.attrs['n']}, "
               f"$\\lambda_W$={results.attrs['lam_W']:.3g}, $\\lambda_H$={results.attrs['lam_H']:g}; NC1 = tr Σ_W / "
               f"tr Σ_B; minimisers: " + (note or "every one converged"), fontsize=10)
  return fig
