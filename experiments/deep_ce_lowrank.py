r"""Checks Garrod & Keating 2024 Thm. 1 on the deep linear CE-UFM: low-rank blocks below every ETF (vs Dang et al.).

Garrod & Keating (2024, "The Persistence of Neural Collapse Despite Low-Rank Bias", arXiv 2410.23169,
Thm. 1): with width :math:`\ge K`, no ETF (DNC) configuration is a global minimum when ``K >= 4, M >= 3`` or
``K >= 6, M = 2``; a rank-``K/2`` block logit matrix is lower. Dang et al. (2023, arXiv 2301.00437,
Thm. A.1) state the opposite (ETF globally optimal across layers). Here, bias-free, ``n = 2``, ``d = K``,
:math:`\lambda_{W_m} = \lambda_H = \lambda`, float64 L-BFGS from ``num_seeds`` Gaussian starts (vmapped) for
``K in {3, 4, 6, 8}`` and ``M in {1, 2, 3, 4}``: each start's objective relative to the best ETF
(:func:`ufm.theory.deep_ce_etf`) and the block construction (:func:`ufm.theory.deep_ce_block`), and the
numerical rank of the class-mean logit matrix it reaches (singular values above 1e-3 of the largest).
derivations §11 Part A has an independent float64 check of the same reductions.

Balanced bias-free deep linear CE-UFM: the best ETF configuration vs the low-rank block construction vs what
float64 L-BFGS reaches from random starts. New figure (neither paper has one of this comparison). A start counts as
converged when L-BFGS reaches ``gtol``; the figure draws converged starts only (:func:`experiments.runner.gate`) and
says how many it left out.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common, runner
from ufm import deep, theory

PAPER = "Garrod & Keating 2024 (arXiv 2410.23169) Thm. 1 vs Dang et al. 2023 (arXiv 2301.00437) Thm. A.1"
FIGURE = "checks Garrod & Keating 2024 Thm. 1 (against Dang et al. 2023 Thm. A.1) with the solvers; new figure"
RUNTIME = "425 s wall under load ~9 on 2 shared cores (161 s CPU; compilation of 16 L-BFGS programs 401 s)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K in {3, 4, 6, 8}, M in {1, 2, 3, 4}, n = 2, lam = 1e-3, 16 starts. ``"smoke"``: K = 4, M = 3, 2 starts."""
  c = ml_collections.ConfigDict()
  c.Ks, c.depths = (3, 4, 6, 8), (1, 2, 3, 4)
  c.n, c.lam = 2, 1e-3
  c.seed, c.num_seeds = 0, 16
  c.init_scale, c.max_steps, c.gtol = 1.0, 4000, 1e-9
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.Ks, c.depths, c.num_seeds, c.max_steps = (4,), (3,), 2, 30
  return c



def run(c, ctx) -> xr.Dataset:
  """Dims ``(K, depth, seed)`` for the solver, ``(K, depth)`` for the candidates."""
  Ks = tuple(_common.check_int("K", K, lo=2, hi=64) for K in c.Ks)
  depths = tuple(_common.check_int("depth", M, lo=1, hi=20) for M in c.depths)
  n = _common.check_int("n", c.n)
  problems = {(K, M): deep.make_deep_problem(ufm.balanced_counts(K, n), d=K, depth=M, lam_W=c.lam, lam_H=c.lam,
                                             loss="ce", dtype=_common.dtype(c)) for K in Ks for M in depths}
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=c.gtol, dtype=_common.dtype(c))
  S = len(ctx.axes["seed"])
  shape = (len(Ks), len(depths))
  f, rank, conv = np.zeros(shape + (S,)), np.zeros(shape + (S,), int), np.zeros(shape + (S,), bool)
  sv = np.full(shape + (S, max(Ks)), np.nan)
  F_etf, F_blk = np.zeros(shape), np.full(shape, np.nan)
  for (K, M), p in problems.items():
    i, j = Ks.index(K), depths.index(M)
    res = ctx.sweep(f"deep_ce_lowrank[K={K},M={M}]", ufm.lbfgs_reference, p, hp, axes=ctx.axes, max_steps=c.max_steps)
    sol = res.solution
    Zbar = np.asarray(jax.vmap(lambda prm: prm.W @ prm.H[:, ::n])(sol.params), np.float64)
    s = np.linalg.svd(Zbar, compute_uv=False)
    f[i, j], conv[i, j] = np.asarray(sol.objective), np.asarray(sol.converged)
    rank[i, j] = np.sum(s > 1e-3 * s[:, :1], axis=1)
    sv[i, j, :, :K] = s
    F_etf[i, j] = float(theory.deep_ce_etf(K, n, M, c.lam, c.lam).objective)
    if K % 2 == 0:
      F_blk[i, j] = float(theory.deep_ce_block(K, n, M, c.lam, c.lam).objective)
  ds = xr.Dataset({"objective": (("K", "depth", "seed"), f), "rank": (("K", "depth", "seed"), rank),
                   "converged": (("K", "depth", "seed"), conv),
                   "singular_values": (("K", "depth", "seed", "index"), sv),
                   "pred_F_etf": (("K", "depth"), F_etf), "pred_F_blk": (("K", "depth"), F_blk)},
                  coords={"K": list(Ks), "depth": list(depths), "seed": ctx.axes["seed"], "index": np.arange(max(Ks))})
  ds["gap_to_etf"] = (ds.objective - ds.pred_F_etf) / ds.pred_F_etf
  ds.attrs.update(n=n, lam=c.lam)
  return ds


def summary(results: xr.Dataset, c) -> dict:
  """Per (K, M), over the converged starts: counts, the lowest objective relative to the best ETF, the block
  construction relative to the best ETF, how many starts end below the best ETF, and the ranks reached."""
  out = {"cells": {}}
  for K in results.K.values:
    for M in results.depth.values:
      r = results.sel(K=K, depth=M)
      ok, _ = runner.gate(r.converged.values)
      g = r.gap_to_etf.values[ok]
      blk = float((r.pred_F_blk - r.pred_F_etf) / r.pred_F_etf)
      out["cells"][f"K={int(K)},M={int(M)}"] = {
          "K": int(K), "M": int(M), "starts": int(ok.size), "converged": int(ok.sum()),
          "best_gap": float(g.min()) if g.size else None,
          "below_etf": int((g < -1e-9).sum()), "block_gap": blk if np.isfinite(blk) else None,
          "ranks": sorted({int(x) for x in r["rank"].values[ok]})}
  out.update(n=int(results.attrs["n"]), lam=float(results.attrs["lam"]), seeds=int(results.sizes["seed"]))
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  C = summary["cells"]
  conv = sum(r["converged"] for r in C.values())
  starts = sum(r["starts"] for r in C.values())
  below = [r for r in C.values() if r["below_etf"]]
  blk = [r for r in C.values() if r["block_gap"] is not None and r["block_gap"] < 0]
  txt = (f"checks Garrod & Keating 2024 Thm. 1 (against Dang et al. 2023 Thm. A.1, which states the ETF is globally "
         f"optimal); new figure. Bias-free balanced deep linear CE-UFM, n = {summary['n']}, d = K, λ = "
         f"{summary['lam']:g}, K in {{{', '.join(sorted({str(r['K']) for r in C.values()}, key=int))}}}, M in "
         f"{{{', '.join(sorted({str(r['M']) for r in C.values()}, key=int))}}}, float64 L-BFGS from {summary['seeds']} "
         f"starts: {conv} of {starts} converge (‖∇f‖ ≤ {c.gtol:.0e}) and are counted. The rank-K/2 block "
         "construction is below the best ETF at "
         + (", ".join(f"K = {r['K']}, M = {r['M']} ({100 * r['block_gap']:+.2f} %)" for r in blk) or "no cell")
         + "; converged starts end below the best ETF at "
         + (", ".join(f"K = {r['K']}, M = {r['M']} ({r['below_etf']}/{r['converged']}, best "
                      f"{100 * r['best_gap']:+.2f} %, ranks {'/'.join(map(str, r['ranks']))})" for r in below)
            or "no cell") + ".")
  return txt


def plot(results: xr.Dataset, c):
  """Top: each converged start's objective relative to the best ETF (dots), the block construction (crosses) and 0
  (the ETF), per K against M. Bottom: the rank of the logit matrix the converged starts reach."""
  from matplotlib import pyplot as plt
  Kn = results.sizes["K"]
  fig, axs = plt.subplots(2, Kn, figsize=(4.2 * Kn, 6.8), constrained_layout=True, squeeze=False)
  depths = results.depth.values
  rng = np.random.default_rng(0)
  notes = []
  for i, K in enumerate(results.K.values):
    r = results.sel(K=K)
    ax = axs[0, i]
    oks = []
    for j, M in enumerate(depths):
      ok, note = runner.gate(r.converged.values[j])
      oks.append(ok)
      if note:
        notes.append(f"K={K} M={M}: {note}")
      g = r.gap_to_etf.values[j][ok]
      ax.plot(M + 0.12 * rng.standard_normal(g.shape), 100 * g, "o", ms=3, alpha=0.6, color="C0",
              label="L-BFGS starts (converged)" if j == 0 else None)
    blk = 100 * (r.pred_F_blk.values - r.pred_F_etf.values) / r.pred_F_etf.values
    ax.plot(depths, blk, "x-", color="C3", ms=8, label="rank-K/2 blocks (G&K)")
    ax.axhline(0, color="k", lw=1, label="best ETF (Dang et al. Thm. A.1)")
    ax.set(xlabel="depth M", ylabel="(f − F_ETF)/F_ETF  [%]", title=f"K={K}", xticks=depths)
    gaps = np.concatenate([100 * r.gap_to_etf.values[j][oks[j]] for j in range(len(depths))])
    lows = np.concatenate([blk[np.isfinite(blk)], gaps])
    ax.set_ylim(min(-30, lows.min() - 3) if lows.size else -30, 30)
    ax = axs[1, i]
    for j, M in enumerate(depths):
      vals, cnt = np.unique(r["rank"].values[j][oks[j]], return_counts=True)
      ax.scatter(np.full(vals.shape, M), vals, s=20 * cnt, color="C0", alpha=0.6)
    ax.set(xlabel="depth M", ylabel="rank of the reached logit matrix", xticks=depths, yticks=range(1, K + 1))
  axs[0, 0].legend(fontsize=7, loc="upper left")
  a = results.attrs
  left = "; ".join(notes) if notes else f"every start converged (‖∇f‖ ≤ {c.gtol:g})"
  fig.suptitle(f"Balanced bias-free deep linear CE-UFM, n={a['n']}, d=K, λ={a['lam']:g}: float64 L-BFGS from "
               f"{results.sizes['seed']} Gaussian starts (marker area ∝ number of starts); {left}", fontsize=10)
  return fig
