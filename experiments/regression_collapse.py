r"""Neural regression collapse in the UFM: NRC1-NRC3 and the spectrum of W W^T against the weight decay.

Checks Andriopoulos, Dong, Guo, Zhao, Ross 2024 (arXiv 2409.04180), the UFM theorem of their Sec. 4 (its number
not checked against the text; the closed form derived in derivations §13): for :math:`\lambda_W, \lambda_H > 0` the
global minimiser of the regression UFM (:mod:`ufm.regression`) has NRC1 = NRC2 = NRC3 = 0 with
:math:`WW^\top = \sqrt{N\lambda_H/\lambda_W}(\Sigma^{1/2} - \sqrt{N\lambda_W\lambda_H}I)_+`, and with
:math:`\lambda_W = \lambda_H = 0` nothing collapses. Targets: ``n`` dimensions with standard deviations
``scales`` along a random rotation (:func:`ufm.regression.random_targets`), ``N`` samples, features of dimension
``d > n``; float64 L-BFGS over a log grid of :math:`\lambda_W` (fixed :math:`\lambda_H`) and ``num_seeds`` starts
(vmapped), plus the unregularised problem from the same starts.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common
from ufm import regression

PAPER = "Andriopoulos et al. 2024 (Neural Multivariate Regression)"
FIGURE = "checks Andriopoulos et al. 2024, UFM theorem of Sec. 4 (NRC1-NRC3; no collapse at lambda = 0)"
RUNTIME = "41 s (compile 38 s)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: n = 3 (std 1, 1/2, 1/4), N = 30, d = 8, lam_H = 0.01, 17 values of lam_W in [1e-4, 10], 4 starts.
  ``"smoke"``: n = 2, N = 6, d = 3, 3 values, 1 start, 30 iterations."""
  c = ml_collections.ConfigDict()
  c.n, c.N, c.d = 3, 30, 8
  c.scales = (1.0, 0.5, 0.25)
  c.target_seed = 0
  c.lam_H = 0.01
  c.lam_W_min, c.lam_W_max, c.num_lam_W = 1e-4, 10.0, 17
  c.seed, c.num_seeds, c.init_scale = 0, 4, 0.5
  c.max_steps, c.gtol = 3000, 1e-10
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.n, c.N, c.d, c.scales, c.num_lam_W, c.num_seeds, c.max_steps = 2, 6, 3, (1.0, 0.5), 3, 1, 30
  return c


def sweep(c) -> dict:
  """The vmapped axes: ``lam_W`` (log grid) and ``seed``."""
  return {"lam_W": _common.log_grid(c, "lam_W_min", "lam_W_max", "num_lam_W"), "seed": _common.seeds(c)}


def run(c, ctx) -> xr.Dataset:
  """Dims ``(lam_W, seed)`` for the regularised solves, ``(seed,)`` for the unregularised ones, ``(lam_W, k)`` for the
  eigenvalues of ``W W^T`` (solved: ``(lam_W, seed, k)``)."""
  n = _common.check_int("n", c.n)
  N = _common.check_int("N", c.N, lo=2)
  scales = _common.positive("scales", c.scales)
  if scales.size != n:
    raise ValueError(f"scales = {tuple(c.scales)!r} has {scales.size} entries; allowed: n = {n} numbers > 0")
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  dt = _common.dtype(c)
  Y = regression.random_targets(jax.random.key(_common.check_int("target_seed", c.target_seed, lo=0)), n, N,
                                scales=scales, dtype=dt)
  problem = regression.make_regression_problem(Y, d=c.d, lam_W=1.0, lam_H=c.lam_H, dtype=dt)
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=c.gtol, dtype=dt)
  res = ctx.sweep("regression_collapse", ufm.lbfgs_reference, problem, hp, axes=ctx.axes, max_steps=c.max_steps)
  ds = _common.sweep_dataset(res)
  lam_Ws = np.asarray(ctx.axes["lam_W"], np.float64)
  Sigma = regression.target_covariance(Y)
  gam = N * lam_Ws * c.lam_H

  def metrics(params, g):
    m = regression.nrc_metrics(params, problem, g)
    return m["nrc1"], m["nrc2"], m["nrc3"], jax.numpy.linalg.eigvalsh(params.W @ params.W.T)[::-1]

  fn = jax.vmap(jax.vmap(metrics, in_axes=(0, None)), in_axes=(0, 0))
  m1, m2, m3, ev = fn(res.solution.params, jax.numpy.asarray(gam, dt))
  for k, v in (("nrc1", m1), ("nrc2", m2), ("nrc3", m3)):
    ds[k] = (("lam_W", "seed"), np.asarray(v))
  ds["eig_WWt"] = (("lam_W", "seed", "k"), np.asarray(ev))
  pred_f, pred_ev = [], []
  for lw in lam_Ws:
    sol = ufm.theory.regression_minimiser(np.asarray(Y), lw, c.lam_H, bias=True)
    pred_f.append(float(sol.objective))
    pred_ev.append(np.sort(np.linalg.eigvalsh(np.asarray(sol.gram_W)))[::-1])
  ds["pred_objective"] = ("lam_W", np.asarray(pred_f))
  ds["pred_eig_WWt"] = (("lam_W", "k"), np.asarray(pred_ev))
  # the unregularised problem from the same starts: no collapse
  zero = problem.replace(lam_W=jax.numpy.asarray(0.0, dt), lam_H=jax.numpy.asarray(0.0, dt))
  res0 = ctx.sweep("regression_collapse[lam=0]", ufm.lbfgs_reference, zero, hp, axes={"seed": ctx.axes["seed"]},
                   max_steps=c.max_steps)
  m0 = jax.vmap(lambda P: regression.nrc_metrics(P, zero, 0.0))(res0.solution.params)
  for k, v in m0.items():
    ds[f"{k}_lam0"] = ("seed", np.asarray(v))
  ds["objective_lam0"] = ("seed", np.asarray(res0.solution.objective))
  ds["converged_lam0"] = ("seed", np.asarray(res0.solution.converged))
  ds["diverged_lam0"] = ("seed", np.asarray(res0.solution.diverged))
  ds["sigma"] = ("k", np.sort(np.linalg.eigvalsh(np.asarray(Sigma)))[::-1])
  ds.attrs.update(n=n, N=N, d=c.d, lam_H=c.lam_H, scales=[float(s) for s in scales])
  return ds.drop_vars("num_steps").assign(num_iterations=ds.num_steps)


def plot(results: xr.Dataset, c):
  """Left: NRC1-NRC3 of every start against lam_W (floored at 1e-20; not drawn where the minimiser is zero), the
  unregularised solves' values as horizontal lines. Middle: eigenvalues of W W^T (markers: every start; lines: the closed form). Right: relative
  objective gap of every start to the closed form."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
  lw = results.lam_W.values
  S = results.sizes["seed"]
  ax = axs[0]
  alive = (results.pred_eig_WWt.values.max(axis=1) > 0)[:, None]  # the zero minimiser has no NRC target
  for i, k in enumerate(("nrc1", "nrc2", "nrc3")):
    v = np.where(alive, np.maximum(results[k].values, 1e-20), np.nan)
    for s in range(S):
      ax.plot(lw, v[:, s], "o", color=f"C{i}", mfc="none", ms=5, label=f"{k.upper()} (λ_W > 0)" if s == 0 else None)
    ax.axhline(float(np.median(results[f"{k}_lam0"].values)), color=f"C{i}", ls="--", lw=1,
               label=f"{k.upper()} at λ_W = λ_H = 0 (median of starts)")
  ax.set(xscale="log", yscale="log", xlabel=r"$\lambda_W$", ylim=(1e-21, 3), title="NRC metrics (0 = collapse; zero minimiser not drawn)")
  ax.legend(fontsize=7, loc="center right")
  ax = axs[1]
  ev, pev = results.eig_WWt.values, results.pred_eig_WWt.values
  for k in range(pev.shape[1]):
    ax.plot(lw, np.maximum(pev[:, k], 1e-12), "-", color=f"C{k}", lw=1.5, alpha=0.6,
            label=r"closed form $\sqrt{N\lambda_H/\lambda_W}(\sqrt{\sigma_%d} - \sqrt{\gamma})_+$" % (k + 1))
    for s in range(S):
      ax.plot(lw, np.maximum(ev[:, s, k], 1e-12), "x", color=f"C{k}", ms=5)
  ax.set(xscale="log", yscale="log", xlabel=r"$\lambda_W$", title=r"eigenvalues of $WW^\top$ (x: L-BFGS starts; "
         "0 drawn at 1e-12)")
  ax.legend(fontsize=7)
  ax = axs[2]
  gap = np.abs(results.objective.values - results.pred_objective.values[:, None]) / results.pred_objective.values[:, None]
  for s in range(S):
    ax.plot(lw, np.maximum(gap[:, s], 1e-17), "s", color="C3", mfc="none", ms=5, label="starts" if s == 0 else None)
  ax.set(xscale="log", yscale="log", xlabel=r"$\lambda_W$", ylim=(1e-18, 1),
         title=r"$|f - f^\star|/f^\star$ (floored at 1e-17)")
  ax.legend(fontsize=8)
  a = results.attrs
  fig.suptitle(f"Regression UFM with bias: n={a['n']} targets (std {', '.join(f'{s:g}' for s in a['scales'])}), "
               f"N={a['N']}, d={a['d']}, λ_H={a['lam_H']:g}; float64 L-BFGS, {S} starts per λ_W", fontsize=10)
  return fig


def summary(results, c) -> dict:
  """Over the converged starts with lam_W > 0: the largest NRC1-NRC3, the largest relative error of the eigenvalues of
  W W^T and of the objective against the closed form; at lam = 0: the medians of NRC1-NRC3."""
  ok = results.converged.values & ~results.diverged.values
  ok = ok & (results.pred_eig_WWt.values.max(-1) > 0)[:, None]  # W = 0 beyond the threshold: NRC undefined there
  pe = results.pred_eig_WWt.values[:, None, :]
  eig = (np.abs(results.eig_WWt.values - pe) / np.maximum(np.abs(pe).max(-1, keepdims=True), 1e-300)).max(-1)[ok]
  po = results.pred_objective.values[:, None]
  obj = (np.abs(results.objective.values - po) / np.abs(po))[ok]
  ok0 = results.converged_lam0.values & ~results.diverged_lam0.values
  out = {"N": int(results.attrs["N"]), "d": int(results.attrs["d"]), "lam_H": float(results.attrs["lam_H"]),
         "lam_lo": float(results.lam_W.min()), "lam_hi": float(results.lam_W.max()), "runs": int(ok.size),
         "converged": int(ok.sum()), "eig": float(eig.max()) if eig.size else None,
         "objective": float(obj.max()) if obj.size else None, "runs0": int(ok0.size), "converged0": int(ok0.sum())}
  for k in ("nrc1", "nrc2", "nrc3"):
    v = results[k].values[ok]
    out[k] = float(v.max()) if v.size else None
    v0 = results[f"{k}_lam0"].values[ok0]
    out[f"{k}_lam0"] = float(np.median(v0)) if v0.size else None
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v: "n/a" if v is None else f"{v:.1e}"
  g = lambda v: "n/a" if v is None else f"{v:.2f}"
  return (f"{FIGURE}: regression UFM, N = {summary['N']}, d = {summary['d']}, λ_H = {summary['lam_H']:g}, λ_W ∈ "
          f"[{summary['lam_lo']:g}, {summary['lam_hi']:g}], float64 L-BFGS; over the λ_W where the minimiser is not 0, "
          f"{summary['converged']}/{summary['runs']} starts converged: NRC1 ≤ {f(summary['nrc1'])}, NRC2 ≤ {f(summary['nrc2'])}, NRC3 ≤ {f(summary['nrc3'])}; the "
          f"eigenvalues of WWᵀ within {f(summary['eig'])} and the objective within {f(summary['objective'])} "
          f"(relative) of the closed form. At λ = 0 ({summary['converged0']}/{summary['runs0']} converged) there is no "
          f"collapse: median NRC1 {g(summary['nrc1_lam0'])}, NRC2 {g(summary['nrc2_lam0'])}, NRC3 "
          f"{g(summary['nrc3_lam0'])}.")
