r"""Classes crossing the collapse threshold one by one: imbalanced, bias-free deep linear MSE-UFM over lambda.

Counts ``(8, 4, 2, 2)`` (Dang et al.'s ``(200, 100, 50, 50)`` profile scaled down so that float64 L-BFGS is
cheap), width ``d = 6`` at every layer, :math:`\lambda_{W_m} = 0.05` on every layer and :math:`\lambda_H`
on a log grid, depths :math:`M \in \{1, 2, 3, 4\}`, ``num_seeds`` random starts per point (vmapped; the best is kept, and the
fraction of starts that reach the global minimum is recorded: for ``M >= 2`` every class has a local minimum
at 0). Against :func:`ufm.theory.deep_mse_minimiser` with the global rule (argmin over ``{0, x_+}``) and
with Dang et al.'s rule (the largest root, their ``compute_x``); vertical lines: the global thresholds
(:func:`lam_H_threshold` at :func:`ufm.theory.deep_threshold_ratio`; solid) and where the largest root stops existing (dotted; Dang et
al.'s code raises there). Between the two, for ``M >= 2``, their rule predicts a non-zero class that is
not the global minimiser.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import jax.numpy as jnp
import ufm
from experiments import _common
from ufm import deep, theory

PAPER = "Dang et al. 2023 (arXiv 2301.00437), imbalanced MSE theorem and code"
FIGURE = "new (checks Dang et al. 2023's imbalanced MSE theorem and its largest-root rule over lambda)"
RUNTIME = "1156 s wall under load (155 s CPU)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: counts (8, 4, 2, 2), d = 6, depths 1-4, lam_W = 0.05, 48 values of lam_H, 4 starts. ``"smoke"``: depth 2,
  3 values, 2 starts."""
  c = ml_collections.ConfigDict()
  c.counts = (8, 4, 2, 2)
  c.d = 6
  c.depths = (1, 2, 3, 4)
  c.lam_W = 0.05
  c.lam_H_min, c.lam_H_max, c.num_lams = 5e-4, 1.0, 48
  c.seed, c.num_seeds = 0, 4
  c.init_scale, c.max_steps, c.gtol = 1.0, 5000, 1e-10
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.counts, c.d, c.depths, c.num_lams, c.num_seeds, c.max_steps = (4, 2), 2, (2,), 3, 2, 50
  return c


def sweep(c) -> dict:
  """Vmapped axes: ``lam_H`` (the feature decay; ``lam_W`` fixed on every layer) and seeds."""
  return {"lam_H": _common.log_grid(c, "lam_H_min", "lam_H_max", "num_lams"), "seed": _common.seeds(c)}


def lam_H_threshold(counts, M: int, lam_W: float, ratio: float) -> np.ndarray:
  r"""The ``lam_H`` at which :math:`b/n_k` reaches ``ratio``: :math:`b = MN\lambda_W(N\lambda_H)^{1/M}` gives
  :math:`\lambda_H = (	ext{ratio}\,n_k/(MN\lambda_W))^M/N`. With ``ratio`` = :func:`ufm.theory.deep_threshold_ratio`
  the global threshold, with :func:`ufm.theory.deep_existence_ratio` the end of Dang et al.'s largest root."""
  n = np.asarray(counts, np.float64)
  N = n.sum()
  return (ratio * n / (M * N * lam_W)) ** M / N


def run(c, ctx) -> xr.Dataset:
  """Dims ``(depth, lam_H, seed, class)`` for the solver's per-class norms, ``(depth, lam_H, class)`` for the theory."""
  lams, seeds = ctx.axes["lam_H"], ctx.axes["seed"]
  depths = tuple(_common.check_int("depth", M, lo=1, hi=20) for M in c.depths)
  problems = {M: deep.make_deep_problem(c.counts, d=c.d, depth=M, lam_W=c.lam_W, lam_H=float(lams[0]), loss="mse",
                                        dtype=_common.dtype(c)) for M in depths}
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=c.gtol, dtype=_common.dtype(c))
  K = len(c.counts)
  D, L, S = len(depths), len(lams), len(seeds)
  w, h = np.zeros((D, L, S, K)), np.zeros((D, L, S, K))
  f, conv = np.zeros((D, L, S)), np.zeros((D, L, S), bool)
  th = {k: np.zeros((D, L, K)) for k in ("w_global", "h_global", "w_largest", "h_largest")}
  f_th = {k: np.zeros((D, L)) for k in ("global", "largest")}
  thr, exist = np.zeros((D, K)), np.zeros((D, K))
  for j, M in enumerate(depths):
    p = problems[M]
    res = ctx.sweep(f"deep_mse_thresholds[M={M}]", ufm.lbfgs_reference, p, hp, axes=ctx.axes, max_steps=c.max_steps)
    sol = res.solution
    W = np.asarray(jax.vmap(jax.vmap(lambda prm: prm.W))(sol.params), np.float64)
    Hs = np.asarray(sol.params.H, np.float64)
    labels = np.asarray(p.labels)
    Hbar = np.stack([Hs[..., labels == k].mean(-1) for k in range(K)], -1)
    w[j], h[j] = np.linalg.norm(W, axis=-1), np.linalg.norm(Hbar, axis=-2)
    f[j], conv[j] = np.asarray(sol.objective), np.asarray(sol.converged)
    for rule in ("global", "largest"):
      t = jax.vmap(lambda lam: theory.deep_mse_minimiser(c.counts, c.lam_W, lam, M=M, bias=False, rule=rule))(
          jnp.asarray(lams))
      th[f"w_{rule}"][j] = np.sqrt(np.maximum(np.diagonal(np.asarray(t.gram_W), axis1=-2, axis2=-1), 0))
      th[f"h_{rule}"][j] = np.sqrt(np.maximum(np.diagonal(np.asarray(t.gram_M), axis1=-2, axis2=-1), 0))
      f_th[rule][j] = np.asarray(t.objective)
    thr[j] = lam_H_threshold(c.counts, M, c.lam_W, theory.deep_threshold_ratio(M))
    exist[j] = lam_H_threshold(c.counts, M, c.lam_W, theory.deep_existence_ratio(M))
  ds = xr.Dataset(
      {"norm_w": (("depth", "lam_H", "seed", "class"), w), "norm_h": (("depth", "lam_H", "seed", "class"), h),
       "objective": (("depth", "lam_H", "seed"), f), "converged": (("depth", "lam_H", "seed"), conv),
       **{f"pred_{k}": (("depth", "lam_H", "class"), v) for k, v in th.items()},
       **{f"pred_objective_{k}": (("depth", "lam_H"), v) for k, v in f_th.items()},
       "pred_threshold": (("depth", "class"), thr), "pred_existence": (("depth", "class"), exist)},
      coords={"depth": list(depths), "lam_H": lams, "seed": seeds, "class": np.arange(K)})
  ds["reached_global"] = np.abs(ds.objective - ds.pred_objective_global) <= 1e-7 * np.abs(ds.pred_objective_global)
  ds.attrs.update(counts=list(c.counts), d=c.d, lam_W=c.lam_W)
  return ds


def plot(results: xr.Dataset, c):
  """One panel per depth: per-class ||w_k|| of the product classifier (best start) against lam_H, the global
  closed form (solid), Dang et al.'s largest-root rule (dashed), thresholds (solid/dotted verticals)."""
  from matplotlib import pyplot as plt
  D = results.sizes["depth"]
  fig, axs = plt.subplots(1, D, figsize=(4.6 * D, 4.2), constrained_layout=True, squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  lams = results.lam_H.values
  counts = results.attrs["counts"]
  for j, M in enumerate(results.depth.values):
    ax = axs[0, j]
    r = results.sel(depth=M)
    best = r.objective.argmin("seed")
    wb = r.norm_w.isel(seed=best)
    for k in range(results.sizes["class"]):
      col = colors[k % len(colors)]
      ax.plot(lams, r.pred_w_global.values[:, k], color=col, lw=1.5, label=f"class {k} (n={counts[k]})")
      ax.plot(lams, r.pred_w_largest.values[:, k], color=col, lw=1, ls="--")
      ax.plot(lams, wb.values[:, k], "o", color=col, ms=3)
      ax.axvline(float(r.pred_threshold.values[k]), color=col, lw=0.8)
      if M > 1:
        ax.axvline(float(r.pred_existence.values[k]), color=col, lw=0.8, ls=":")
    frac = float(r.reached_global.mean())
    ax.set(xscale="log", xlabel=r"$\lambda_H$", ylabel=r"$\|\bar w_k\|$ (product classifier)",
           title=f"M={M}: {100 * frac:.0f}% of starts reach the global minimum")
    ax.title.set_fontsize(9)
  axs[0, 0].legend(fontsize=7)
  fig.suptitle(f"Imbalanced bias-free deep linear MSE-UFM, counts {tuple(counts)}, d={results.attrs['d']}, "
               f"λ_W={results.attrs['lam_W']:g}: L-BFGS (float64, best start; dots) vs closed form (solid: global "
               "argmin over {0, x+}; dashed: Dang et al.'s largest root). Verticals: global threshold (solid), end of "
               "the largest root (dotted)", fontsize=9)
  return fig
