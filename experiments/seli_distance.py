r"""Distance of the imbalanced CE-UFM minimiser to the SELI geometry as the weight decay goes to zero.

For several imbalance profiles (K = 4: STEP, long-tailed, one majority class, irregular, and balanced as a
control), with and without an unregularised bias, the float64 convex reference :func:`ufm.convex.ce_convex`
(one vmapped call per setting over profiles x :math:`\lambda = \lambda_W = \lambda_H`) gives the global
minimiser; plotted is the Frobenius distance between the normalised Grams :math:`WW^\top` and
:math:`\bar H^\top\bar H` and the SELI Grams of :func:`ufm.convex.seli_grams`. Markers: float64 L-BFGS on
the full non-convex UFM (STEP profile, ``d = 5``, as in derivations §5.6's table).

Sources: Thrampoulidis et al. 2022 (arXiv 2208.05512), Definition 2, Thm. 2 / Prop. 2 (the limit is proved
for STEP imbalance); derivations §5.6, §9.3.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common, runner
from ufm import convex

PAPER = "Thrampoulidis et al. 2022"
FIGURE = "checks Thrampoulidis et al. 2022 Def. 2 / Thm. 2 (SELI as lambda goes to 0)"
RUNTIME = "9 s wall with a warm compilation cache (91 s cold under load ~4)"

_SETTINGS = ("ce", "ce+bias")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: 5 profiles, lambda in [1e-7, 1e-1] (25 points), bias-free; L-BFGS at 3 lambdas. ``"smoke"``: tiny."""
  c = ml_collections.ConfigDict()
  # Bias-free only: SELI (Thrampoulidis et al. Def. 2) and the targets of ufm.convex.seli_grams are those of the
  # bias-free model; with a bias the uncentred class-mean Gram has no SELI target to compare with.
  # `--set "settings=('ce', 'ce+bias')"` adds the bias rows, with that caveat.
  c.settings = ("ce",)
  c.profiles = ("step", "long_tailed", "one_major", "irregular", "balanced")
  c.counts = ml_collections.ConfigDict(dict(step=(10, 10, 2, 2), long_tailed=(10, 5, 3, 2), one_major=(10, 2, 2, 2),
                                            irregular=(10, 7, 4, 1), balanced=(5, 5, 5, 5)))
  c.lam_min, c.lam_max, c.num_lams = 1e-7, 1e-1, 25
  c.lam_check = (1e-2, 1e-3, 1e-4)  # L-BFGS on the full UFM, STEP profile (derivations §5.6 table)
  c.d = 5
  c.tol, c.max_steps, c.seed, c.init_scale = 1e-11, 6000, 0, 0.1
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.settings, c.profiles, c.num_lams, c.lam_check, c.max_steps = ("ce",), ("step", "balanced"), 3, (1e-2,), 300
  return c


def sweep(c) -> dict:
  """The vmapped axis: ``lam`` (log-spaced, decreasing)."""
  return {"lam": _common.log_grid(c, "lam_min", "lam_max", "num_lams", min_num=2, decreasing=True)}


def _validate(c):
  settings = _common.check_settings(c.settings, allowed=_SETTINGS, key="settings")
  lams = sweep(c)["lam"]
  profiles = tuple(c.profiles)
  if not profiles or len(set(profiles)) != len(profiles) or any(p not in c.counts for p in profiles):
    raise ValueError(f"profiles = {profiles!r}: allowed: distinct names among {', '.join(c.counts.keys())}")
  counts = {p: tuple(c.counts[p]) for p in profiles}
  K = {len(v) for v in counts.values()}
  if len(K) != 1:
    raise ValueError(f"counts = {counts!r}: allowed: profiles with the same number of classes K")
  for p, v in counts.items():
    ufm.problem.check_real(f"counts.{p}", v, lo=0.0, lo_open=True)
  lam_check = ufm.problem.check_real("lam_check", c.lam_check, lo=0.0, lo_open=True)
  d = _common.check_int("d", c.d, lo=K.pop())
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  ufm.problem.check_real("tol", c.tol, lo=0.0, lo_open=True)
  ufm.problem.check_real("init_scale", c.init_scale, lo=0.0, lo_open=True)
  _common.check_int("seed", c.seed, lo=0)
  return settings, lams, profiles, counts, np.atleast_1d(lam_check), d


@jax.jit
def _distances(X, counts, lam):
  """(d_W, d_H): distances of the normalised Grams at X (class level) to SELI, vmapped over leading axes."""
  def one(X, n, l):
    TW, TH = convex.seli_grams(n)
    return (convex.gram_distance(convex.classifier_gram(X, l, l), TW),
            convex.gram_distance(convex.feature_mean_gram(X, n, l, l), TH))
  return jax.vmap(jax.vmap(one, in_axes=(0, None, 0)), in_axes=(0, 0, None))(X, counts, lam)


def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, profile, lam)`` for the convex reference and ``(setting, lam_check)`` for L-BFGS."""
  settings, lams, profiles, counts, lam_check, d = _validate(c)
  C = np.asarray([counts[p] for p in profiles], float)
  dt = _common.dtype(c)
  parts = []
  for setting in settings:
    loss, bias = _common.SETTINGS[setting]
    sol = convex.ce_convex(C[:, None, :], lams[None, :], lams[None, :], 0.0, bias=bias,
                           hparams=convex.convex_hparams(tol=c.tol), dtype=dt)
    dW, dH = _distances(sol.X, C, lams)
    ds = xr.Dataset({
        "dist_W": (("profile", "lam"), np.asarray(dW)), "dist_H": (("profile", "lam"), np.asarray(dH)),
        "kkt": (("profile", "lam"), np.asarray(sol.kkt)), "rank": (("profile", "lam"), np.asarray(sol.rank)),
        "objective": (("profile", "lam"), np.asarray(sol.objective)),
        "converged": (("profile", "lam"), np.asarray(sol.converged)),
        "diverged": (("profile", "lam"), np.asarray(sol.diverged)),
    })
    step = counts["step"] if "step" in counts else counts[profiles[0]]
    TW, TH = convex.seli_grams(np.asarray(step, float))
    out = {k: [] for k in ("dist_W", "dist_H", "gap", "converged", "diverged")}
    for lam in lam_check:
      p = ufm.make_problem(step, d=d, lam_W=lam, lam_H=lam, loss=loss, bias=bias, dtype=dt)
      hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=1e-10, dtype=dt)
      res = ctx.sweep(f"seli_distance[{setting},lam={lam:g}]", ufm.lbfgs_reference, p, hp, axes={"seed": [c.seed]},
                      max_steps=c.max_steps)
      s = jax.tree.map(lambda x: x[0], res.solution)
      W, H = s.params.W, s.params.H
      Hbar = (H @ p.Y.T) / np.asarray(step, float)[None, :]
      ref = convex.ce_convex(np.asarray(step, float), lam, lam, bias=bias, hparams=convex.convex_hparams(tol=c.tol))
      out["dist_W"].append(float(convex.gram_distance(W @ W.T, TW)))
      out["dist_H"].append(float(convex.gram_distance(Hbar.T @ Hbar, TH)))
      out["gap"].append((float(s.objective) - float(ref.objective)) / abs(float(ref.objective)))
      out["converged"].append(bool(s.converged))
      out["diverged"].append(bool(s.diverged))
    for k, v in out.items():
      ds[f"lbfgs_{k}"] = ("lam_check", np.asarray(v))
    parts.append(ds)
  ds = xr.concat(parts, dim=xr.DataArray(list(settings), dims="setting", name="setting"))
  ds = ds.assign_coords(lam=lams, profile=list(profiles), lam_check=lam_check)
  ds["counts"] = (("profile", "class"), C)
  ds.attrs.update(d=d)
  return ds


def summary(results: xr.Dataset, c) -> dict:
  """Per setting and profile: the distances to SELI at the largest and smallest lambda, and the log-log slope
  over the smallest decade of lambda; the L-BFGS checks' convergence and largest gap to the convex minimum."""
  lam = results.lam.values
  small = lam <= lam.min() * 10
  out = {"K": int(results.sizes["class"]), "lam_max": float(lam.max()), "lam_min": float(lam.min()), "settings": {}}
  for setting in results.setting.values:
    r = results.sel(setting=setting)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    okl, _ = runner.gate(r.lbfgs_converged.values, r.lbfgs_diverged.values)
    rows = []
    for i, prof in enumerate(r.profile.values):
      row = {"profile": str(prof), "counts": [int(x) for x in r.counts.values[i]],
             "converged": int(ok[i].sum()), "runs": int(ok[i].size)}
      for key in ("dist_W", "dist_H"):
        v = np.where(ok[i], r[key].values[i], np.nan)
        row[f"{key}_first"], row[f"{key}_last"] = float(v[0]), float(v[-1])
        x, y = np.log10(lam[small]), np.log10(np.maximum(v[small], 1e-300))
        row[f"{key}_slope"] = float(np.polyfit(x, y, 1)[0]) if np.isfinite(y).all() and v[-1] > 1e-12 else None
      rows.append(row)
    gaps = np.abs(r.lbfgs_gap.values[okl])
    out["settings"][str(setting)] = {"profiles": rows, "lbfgs_runs": int(okl.size), "lbfgs_converged": int(okl.sum()),
                                     "lbfgs_gap": float(gaps.max()) if gaps.size else None,
                                     "kkt": float(r.kkt.values[ok].max()) if ok.any() else None}
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v, spec: "n/a" if v is None else format(v, spec)
  parts = []
  for s, S in summary["settings"].items():
    rows = "; ".join(
        f"{R['profile']} {tuple(R['counts'])}: W {R['dist_W_first']:.1e} → {R['dist_W_last']:.1e}"
        + (f" (slope {R['dist_W_slope']:.2f})" if R["dist_W_slope"] is not None else "")
        + f", class means {R['dist_H_first']:.1e} → {R['dist_H_last']:.1e}"
        + (f" (slope {R['dist_H_slope']:.2f})" if R["dist_H_slope"] is not None else "")
        for R in S["profiles"])
    parts.append(f"{'no bias' if s == 'ce' else 'unregularised bias'}: {rows}. Convex solves KKT ≤ "
                 f"{f(S['kkt'], '.0e')}; L-BFGS on the full UFM (step profile) {S['lbfgs_converged']}/"
                 f"{S['lbfgs_runs']} converged, within {f(S['lbfgs_gap'], '.0e')} of the convex minimum")
  return (f"{FIGURE}: CE-UFM, K = {summary['K']}, float64 convex reference over λ = λ_W = λ_H from "
          f"{summary['lam_max']:g} down to {summary['lam_min']:g}; distance of the normalised Grams to SELI at the "
          f"largest → smallest λ (log-log slope over the last decade) — " + " ".join(parts) + ".")


def plot(results: xr.Dataset, c):
  """Rows: settings; columns: distance of W W^T and of the class-mean Gram to SELI, against lambda (log-log).
  Lines: convex reference per profile; circles: L-BFGS on the full UFM (STEP profile). Unconverged solves are left
  out and counted in the title."""
  from matplotlib import pyplot as plt
  settings = list(results.setting.values)
  fig, axs = plt.subplots(len(settings), 2, figsize=(12, 4.2 * len(settings)), squeeze=False, constrained_layout=True)
  lam = results.lam.values
  for row, setting in zip(axs, settings):
    r = results.sel(setting=setting)
    label = "no bias" if setting == "ce" else "unregularised bias"
    for ax, key, name in ((row[0], "dist_W", r"$WW^\top$"), (row[1], "dist_H", r"$\bar H^\top\bar H$")):
      shown = []
      for i, prof in enumerate(r.profile.values):
        counts = tuple(int(x) for x in r.counts.values[i])
        v = np.where(runner.gate(r.converged.values[i], r.diverged.values[i])[0], r[key].values[i], np.nan)
        if np.nanmax(v) < 1e-6:  # the balanced control: SELI = ETF at every lambda; off the scale of the others
          ax.plot([], [], color=f"C{i}", lw=0, label=f"{prof} {counts}: ≤ {np.max(v):.0e} (off scale)")
          continue
        shown.append(v)
        ax.plot(lam, v, color=f"C{i}", lw=1.6, marker=".", ms=4, label=f"{prof} {counts}")
      okl = runner.gate(r.lbfgs_converged.values, r.lbfgs_diverged.values)[0]
      ax.plot(r.lam_check.values[okl], r[f"lbfgs_{key}"].values[okl], "o", color="k", mfc="none", ms=8,
              label="L-BFGS, full UFM (step)")
      ax.set(xscale="log", yscale="log", xlabel=r"$\lambda = \lambda_W = \lambda_H$ (→ 0)",
             ylabel=f"‖{name}/‖·‖ − SELI‖_F")
      if shown:
        ax.set_ylim(0.7 * np.nanmin(shown), 1.4 * np.nanmax(shown))
      ax.invert_xaxis()
      ax.grid(alpha=0.3, which="both")
      ax.set_title(f"{label}: distance of normalised {name} to SELI", fontsize=10)
      ax.legend(fontsize=7, loc="upper right")
  gap = float(np.max(np.abs(results.lbfgs_gap.values)))
  conv = runner.convergence(results)
  left = conv["runs"] - conv["converged"]
  fig.suptitle((f"{left} of {conv['runs']} solves did not converge (not drawn). " if left else
                f"All {conv['runs']} solves converged. ")
               + f"CE-UFM, K = 4: global minimiser from the convex reference (float64; KKT residual ≤ "
               f"{float(results.kkt.max()):.0e}, its rounding floor at the smallest λ).\nCircles: L-BFGS on the full "
               f"non-convex UFM (d = {results.attrs['d']}), objective gap to the convex minimum ≤ {gap:.1e}",
               fontsize=10)
  return fig
