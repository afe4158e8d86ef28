r"""Neural collapse across the layers of a deep linear UFM (Dang et al. 2023's synthetic setting).

Balanced, ``K = 4``, ``n = 100``, ``d = 64`` at every layer, :math:`\lambda_{W_m} = \lambda_H = 5\cdot10^{-4}`,
full-batch SGD with heavy-ball momentum 0.9, learning rate 0.1, initialisation :math:`\mathcal N(0, 0.1^2)`
for every entry (their ``synthetic_experiment_balanced.py``), depths :math:`M \in \{1, 2, 3, 6, 9\}`, MSE and
CE, with an unregularised last-layer bias and bias-free; ``num_seeds`` seeds vmapped per (setting, depth).

Per layer (features :math:`H_1 = H, H_{m+1} = W_mH_m`, partial classifiers :math:`C_m = W_M\cdots W_m`) the
trace records NC1 of every :math:`H_m`, the class-mean Grams, the classifier Grams and the balancedness of
consecutive layers (:data:`ufm.deep.DEEP_METRICS`); NC2 (distance to the simplex ETF for centred means, with
a bias or CE; to the orthogonal frame for uncentred means, bias-free MSE) and NC3 (self-duality of
:math:`C_m` with layer ``m``'s means) are computed from them. Final objectives are compared with
:func:`ufm.theory.predict` (MSE: the closed form; CE: the best known candidate) and, for CE, with the best
ETF configuration and the rank-``K/2`` block construction (Garrod & Keating 2024, arXiv 2410.23169).
"""

import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, _deep
from ufm import deep, theory

PAPER = "Dang et al. 2023 (arXiv 2301.00437); Garrod & Keating 2024 (arXiv 2410.23169)"
FIGURE = ("reproduces Dang et al. 2023's balanced synthetic experiment for MSE (figure number unverified); the "
          "CE rows are new")
RUNTIME = "1660 s wall under load (load ~9 on 2 shared cores; 335 s CPU)"

TRACE = ("nc1_layers", "mean_grams", "classifier_grams", "balance_errors", "logit_means")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: Dang et al.'s setting with 8 seeds and 10 000 steps (the paper: 30 000). ``"smoke"``: one setting, depth 2."""
  c = ml_collections.ConfigDict()
  c.settings = ("mse", "mse+bias", "ce", "ce+bias")
  c.depths = (1, 2, 3, 6, 9)
  c.K, c.n, c.d = 4, 100, 64
  c.lam = 5e-4
  c.seed, c.num_seeds = 0, 8
  c.lr, c.momentum, c.init_scale = 0.1, 0.9, 0.1
  c.num_steps, c.log_every = 10_000, 250
  c.x64 = False
  if _common.variant(arg) == "smoke":
    c.settings, c.depths = ("mse+bias",), (2,)
    c.K, c.n, c.d, c.num_seeds, c.num_steps, c.log_every = 3, 3, 4, 2, 40, 20
  return c



def _problems(c) -> dict:
  settings = _common.check_settings(c.settings)
  depths = tuple(_common.check_int("depth", M, lo=1, hi=50) for M in c.depths)
  return {(s, M): deep.make_deep_problem(ufm.balanced_counts(c.K, c.n), d=c.d, depth=M, lam_W=c.lam, lam_H=c.lam,
                                         loss=_common.SETTINGS[s][0], bias=_common.SETTINGS[s][1],
                                         dtype=_common.dtype(c))
          for s in settings for M in depths}


def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, depth, seed, step, layer)`` for per-feature-layer traces (``layer`` 0 = ``H`` ... ``M`` = logits),
  ``clayer`` (``m = 1..M``) for the classifier-side ones (NaN beyond a network's layers),
  ``(setting, depth, seed)`` for final values, ``(setting, depth)`` for predictions."""
  problems = _problems(c)
  _common.check_steps(c)
  hp = _common.gd_hparams(c)
  L = max(c.depths) + 1
  settings, depths = tuple(c.settings), tuple(c.depths)
  T = c.num_steps // c.log_every
  S = len(ctx.axes["seed"])
  shape = (len(settings), len(depths))
  Lc = max(c.depths)
  out = {k: np.full(shape + (S, T, L if k in ("nc1", "nc2_M") else Lc), np.nan)
         for k in ("nc1", "nc2_M", "nc2_C", "nc3", "balance")}
  fin = {k: np.full(shape + (S,), np.nan) for k in ("objective", "diverged", "logit_rank", "nc2_pred_M")}
  trace_obj = np.full(shape + (S, T), np.nan)
  pred = {k: np.full(shape, np.nan) for k in ("objective", "F_etf", "F_blk")}
  geometry = np.empty(shape, object)
  pi = np.full(c.K, 1.0 / c.K)
  for (s, M), p in problems.items():
    i, j = settings.index(s), depths.index(M)
    res = ctx.sweep(f"deep_layers_nc[{s},M={M}]", ufm.gradient_descent, p, hp, axes=ctx.axes, num_steps=c.num_steps,
                    log_every=c.log_every, trace_metrics=TRACE)
    sol, tm = res.solution, {k: np.asarray(v, np.float64) for k, v in res.solution.trace.metrics.items()}
    cen = p.bias or p.loss == "ce"
    Tg = _deep.target_gram(c.K, centred=cen)
    MG = _deep.centred(tm["mean_grams"], pi) if cen else tm["mean_grams"]
    out["nc1"][i, j] = _deep.pad(tm["nc1_layers"], L)
    out["nc2_M"][i, j] = _deep.pad(_deep.gram_errors(MG, Tg), L)
    out["nc2_C"][i, j] = _deep.pad(_deep.gram_errors(tm["classifier_grams"], Tg), Lc)
    out["nc3"][i, j] = _deep.pad(_deep.self_duality(tm["classifier_grams"], MG[..., :-1, :, :], tm["logit_means"], pi,
                                                    centre=cen), Lc)
    out["balance"][i, j] = _deep.pad(tm["balance_errors"], Lc)
    trace_obj[i, j] = np.asarray(sol.trace.objective)
    fin["objective"][i, j] = np.asarray(sol.objective)
    fin["diverged"][i, j] = np.asarray(sol.diverged)
    sv = np.linalg.svd(tm["logit_means"][:, -1] @ (np.eye(c.K) - 1.0 / c.K), compute_uv=False)
    fin["logit_rank"][i, j] = np.sum(sv > 1e-2 * sv[:, :1], axis=1)
    try:
      tgt = _deep.predicted_layer_grams(p)
      pr = tgt["prediction"]
      pred["objective"][i, j] = pr.objective
      geometry[i, j] = pr.geometry
      TM = _deep.centred(tgt["mean_grams"][0], pi) if cen else tgt["mean_grams"][0]
      fin["nc2_pred_M"][i, j] = _deep.gram_errors(MG[:, -1, 0], TM)
    except theory.NoClosedFormError as e:
      geometry[i, j] = f"none ({e})"
    if p.loss == "ce":
      pred["F_etf"][i, j] = float(theory.deep_ce_etf(c.K, c.n, M, c.lam, c.lam).objective)
      if c.K % 2 == 0:
        pred["F_blk"][i, j] = float(theory.deep_ce_block(c.K, c.n, M, c.lam, c.lam).objective)
  seeds = ctx.axes["seed"]
  steps = c.log_every * np.arange(1, T + 1)
  dims5 = ("setting", "depth", "seed", "step", "layer")
  dimsc = dims5[:-1] + ("clayer",)
  ds = xr.Dataset({f"trace_{k}": (dims5 if k in ("nc1", "nc2_M") else dimsc, v) for k, v in out.items()},
                  coords={"setting": list(settings), "depth": list(depths), "seed": seeds, "step": steps,
                          "layer": np.arange(L), "clayer": np.arange(1, Lc + 1)})
  ds["trace_objective"] = (("setting", "depth", "seed", "step"), trace_obj)
  for k, v in fin.items():
    ds[k] = (("setting", "depth", "seed"), v.astype(bool) if k == "diverged" else v)
  for k, v in pred.items():
    ds[f"pred_{k}"] = (("setting", "depth"), v)
  ds["geometry"] = (("setting", "depth"), geometry.astype(str))
  ds.attrs.update(K=c.K, n=c.n, d=c.d, lam=c.lam, lr=c.lr, momentum=c.momentum, num_steps=c.num_steps)
  return ds


_COLS = (("nc1", "NC1 (max over layers)"), ("nc2_M", "NC2 of layer means (max over layers)"),
         ("nc2_C", r"NC2 of $W_M\cdots W_m$ (max over m)"), ("nc3", r"NC3: $C_m$ vs layer-$m$ means (max)"),
         ("balance", "balancedness of consecutive layers (max)"))


def plot(results: xr.Dataset, c):
  """One row per setting: each NC metric's worst layer against steps, one colour per depth; last column: final
  NC2 of the means per layer."""
  from matplotlib import pyplot as plt
  S, D = results.sizes["setting"], results.sizes["depth"]
  fig, axs = plt.subplots(S, len(_COLS) + 1, figsize=(19, 3.1 * S + 0.6), constrained_layout=True, squeeze=False)
  cmap = plt.get_cmap("viridis")
  x = results.step.values
  for i, s in enumerate(results.setting.values):
    for j, M in enumerate(results.depth.values):
      col = cmap(j / max(D - 1, 1))
      r = results.sel(setting=s, depth=M)
      for k, (var, title) in enumerate(_COLS):
        Y = np.nanmax(r[f"trace_{var}"].values, axis=-1)
        _common.spread(axs[i, k], x, Y, color=col, label=f"M={M}", floor=1e-12)
        axs[i, k].set(xscale="log", yscale="log", title=f"{s}: {title}" if i == 0 else s)
        axs[i, k].title.set_fontsize(8)
      fin = r.trace_nc2_M.values[:, -1, :]
      axs[i, -1].semilogy(np.arange(fin.shape[-1]), np.nanmean(fin, 0), "o-", color=col, ms=3,
                          label=f"M={M} ({r.geometry.item()[:18]}; rank {np.nanmedian(r.logit_rank.values):.0f})")
    axs[i, -1].set(xlabel="layer m (0 = H, M = logits)", title=f"{s}: final NC2 of layer means")
    axs[i, -1].title.set_fontsize(8)
    axs[i, -1].legend(fontsize=6)
  for ax in axs[-1, :-1]:
    ax.set_xlabel("step")
  axs[0, 0].legend(fontsize=7)
  a = results.attrs
  fig.suptitle(f"Deep linear UFM, K={a['K']}, n={a['n']}, d={a['d']}, λ={a['lam']:g}, SGD lr {a['lr']:g} momentum "
               f"{a['momentum']:g}: mean and min–max over {results.sizes['seed']} seeds (worst layer)", fontsize=10)
  return fig
