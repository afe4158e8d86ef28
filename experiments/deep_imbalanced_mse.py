r"""Imbalanced bias-free deep linear MSE-UFM: per-class norms against depth and the general orthogonal frame.

Dang et al. (2023, arXiv 2301.00437)'s imbalanced synthetic setting (``synthetic_experiment_imbalanced.py``):
counts ``(200, 100, 50, 50)``, ``d = 64`` at every layer, :math:`\lambda_{W_m} = \lambda_H = 5\cdot10^{-4}`,
full-batch SGD with momentum 0.9, learning rate 0.1, :math:`\mathcal N(0, 0.1^2)` initialisation, depths
:math:`M = 1, \dots, 6`, ``num_seeds`` seeds vmapped. Final per-class norms of the product classifier rows
:math:`\|\bar w_k\|` and of the feature means :math:`\|\bar h_k\|` against :func:`ufm.theory.deep_mse_minimiser`
(singular values :math:`s_k^M` and :math:`s_k^M/(s_k^{2M} + N\lambda_H)` in Dang et al.'s notation), and along
the run the Frobenius distance of the normalised :math:`\bar W\bar W^\top`, :math:`\bar H^\top\bar H` and
:math:`\bar W\bar H` to the predicted Grams (their ``compute_NC2_W``, ``compute_NC2_H``, ``compute_NC3_WH``).
"""

import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, _deep
from ufm import deep, theory

PAPER = "Dang et al. 2023 (arXiv 2301.00437), imbalanced MSE theorem"
FIGURE = ("reproduces Dang et al. 2023's imbalanced synthetic experiment (figure number unverified; paper: 1 "
          "seed, 30 000 steps)")
RUNTIME = "383 s wall under load (62 s CPU)"

TRACE = ("mean_grams", "classifier_grams", "logit_means")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: Dang et al.'s setting, depths 1-6, 4 seeds, 10 000 steps (paper: 30 000). ``"smoke"``: depth 2, tiny."""
  c = ml_collections.ConfigDict()
  c.counts = (200, 100, 50, 50)
  c.d = 64
  c.depths = (1, 2, 3, 4, 5, 6)
  c.lam = 5e-4
  c.seed, c.num_seeds = 0, 4
  c.lr, c.momentum, c.init_scale = 0.1, 0.9, 0.1
  c.num_steps, c.log_every = 10_000, 250
  c.x64 = False
  if _common.variant(arg) == "smoke":
    c.counts, c.d, c.depths, c.num_seeds, c.num_steps, c.log_every = (4, 2, 2), 4, (2,), 2, 40, 20
  return c



def run(c, ctx) -> xr.Dataset:
  """Dims ``(depth, seed, step)`` for the Gram distances, ``(depth, seed, class)`` for final norms,
  ``(depth, class)`` for the closed form."""
  depths = tuple(_common.check_int("depth", M, lo=1, hi=20) for M in c.depths)
  problems = {M: deep.make_deep_problem(c.counts, d=c.d, depth=M, lam_W=c.lam, lam_H=c.lam, loss="mse",
                                        dtype=_common.dtype(c)) for M in depths}
  _common.check_steps(c)
  hp = _common.gd_hparams(c)
  K, D, S, T = len(c.counts), len(depths), len(ctx.axes["seed"]), c.num_steps // c.log_every
  dist = {k: np.zeros((D, S, T)) for k in ("gram_W", "gram_M", "logits_M")}
  w, h, obj = np.zeros((D, S, K)), np.zeros((D, S, K)), np.zeros((D, S))
  w_th, h_th, f_th, x_th = np.zeros((D, K)), np.zeros((D, K)), np.zeros(D), np.zeros((D, K))
  diverged = np.zeros((D, S), bool)
  for j, M in enumerate(depths):
    p = problems[M]
    res = ctx.sweep(f"deep_imbalanced_mse[M={M}]", ufm.gradient_descent, p, hp, axes=ctx.axes, num_steps=c.num_steps,
                    log_every=c.log_every, trace_metrics=TRACE)
    tm = {k: np.asarray(v, np.float64) for k, v in res.solution.trace.metrics.items()}
    th = theory.deep_mse_minimiser(c.counts, c.lam, c.lam, M=M, bias=False)
    G_W, G_M = tm["classifier_grams"][:, :, 0], tm["mean_grams"][:, :, 0]
    dist["gram_W"][j] = _deep.gram_errors(G_W, np.asarray(th.gram_W, np.float64))
    dist["gram_M"][j] = _deep.gram_errors(G_M, np.asarray(th.gram_M, np.float64))
    # W Hbar is not symmetric: the same normalised distance on the matrix itself
    Z = tm["logit_means"]
    Zt = np.asarray(th.logits_M, np.float64)
    dist["logits_M"][j] = np.linalg.norm(Z / np.linalg.norm(Z, axis=(-2, -1), keepdims=True) - Zt / np.linalg.norm(Zt),
                                         axis=(-2, -1))
    w[j] = np.sqrt(np.maximum(np.diagonal(G_W[:, -1], axis1=-2, axis2=-1), 0))
    h[j] = np.sqrt(np.maximum(np.diagonal(G_M[:, -1], axis1=-2, axis2=-1), 0))
    obj[j], diverged[j] = np.asarray(res.solution.objective), np.asarray(res.solution.diverged)
    w_th[j] = np.sqrt(np.maximum(np.diagonal(np.asarray(th.gram_W)), 0))
    h_th[j] = np.sqrt(np.maximum(np.diagonal(np.asarray(th.gram_M)), 0))
    f_th[j], x_th[j] = float(th.objective), np.asarray(th.x)
  steps = c.log_every * np.arange(1, T + 1)
  ds = xr.Dataset({**{f"trace_dist_{k}": (("depth", "seed", "step"), v) for k, v in dist.items()},
                   "norm_w": (("depth", "seed", "class"), w), "norm_h": (("depth", "seed", "class"), h),
                   "objective": (("depth", "seed"), obj), "diverged": (("depth", "seed"), diverged),
                   "pred_norm_w": (("depth", "class"), w_th), "pred_norm_h": (("depth", "class"), h_th),
                   "pred_objective": (("depth",), f_th), "pred_x": (("depth", "class"), x_th)},
                  coords={"depth": list(depths), "seed": ctx.axes["seed"], "step": steps, "class": np.arange(K)})
  ds.attrs.update(counts=list(c.counts), d=c.d, lam=c.lam, lr=c.lr, momentum=c.momentum)
  return ds


def plot(results: xr.Dataset, c):
  """Left: ||w_k|| and ||h_k|| against depth (markers: GD, mean over seeds; lines: closed form). Right: distances
  of the normalised Grams to the predicted ones along the run, one colour per depth."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(1, 5, figsize=(22, 4.2), constrained_layout=True)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  depths = results.depth.values
  counts = results.attrs["counts"]
  for ax, var, lab in ((axs[0], "norm_w", r"$\|\bar w_k\|$ (rows of $W_M\cdots W_1$)"),
                       (axs[1], "norm_h", r"$\|\bar h_k\|$ (feature means)")):
    for k in range(results.sizes["class"]):
      col = colors[k % len(colors)]
      ax.plot(depths, results[f"pred_{var}"].values[:, k], "-", color=col, label=f"class {k} (n={counts[k]}) theory")
      ax.plot(depths, results[var].values[:, :, k].mean(1), "o", color=col, ms=6, mfc="none")
    ax.set(xlabel="depth M", ylabel=lab, xticks=depths, title=lab + ": GD (o) vs closed form (—)")
    ax.title.set_fontsize(9)
  axs[0].legend(fontsize=7)
  cmap = plt.get_cmap("viridis")
  x = results.step.values
  for ax, var, lab in ((axs[2], "gram_W", r"$\bar W\bar W^\top$ vs predicted (NC2_W)"),
                       (axs[3], "gram_M", r"$\bar H^\top\bar H$ vs predicted (NC2_H)"),
                       (axs[4], "logits_M", r"$\bar W\bar H$ vs predicted (NC3)")):
    for j, M in enumerate(depths):
      _common.spread(ax, x, results[f"trace_dist_{var}"].values[j], color=cmap(j / max(len(depths) - 1, 1)),
                     label=f"M={M}", floor=1e-8)
    ax.set(xscale="log", yscale="log", xlabel="step", title=lab)
    ax.title.set_fontsize(9)
  axs[2].legend(fontsize=7)
  a = results.attrs
  fig.suptitle(f"Imbalanced bias-free deep linear MSE-UFM, counts {tuple(counts)}, d={a['d']}, λ={a['lam']:g}, SGD lr "
               f"{a['lr']:g} momentum {a['momentum']:g}, {results.sizes['seed']} seeds", fontsize=10)
  return fig
