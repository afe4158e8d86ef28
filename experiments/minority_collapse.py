r"""Minority collapse in the imbalanced CE-UFM: the convex reference against the imbalance ratio and the weight decay.

``K_A`` majority classes of ``n_A = R n_B`` samples and ``K_B`` minority classes of ``n_B``. For each setting
(bias-free; with a bias regularised by ``lam_b``) the float64 convex reference :func:`ufm.convex.ce_convex`
(one vmapped call per setting) gives the global minimiser on a fine grid of real-valued ratios ``R`` for a few
:math:`\lambda = \lambda_W = \lambda_H`, and on a grid of :math:`\mu = \sqrt{\lambda_W\lambda_H}` at Hong &
Ling's counts (``n_A = 500``, ``n_B = 100``, ``K = 10``, ``K_A = 5`` or ``3``, ``lam_b = 0.02``: their 0.01
without the 1/2). Plotted: the mean
cosine between minority classifiers, the minority/majority norm ratio, the majority-minority angle, and the
ratios beyond which the minority classifiers coincide exactly (``R_coincide``: spread <= 1e-6, located by a
two-stage grid refinement) and vanish (``R_vanish``: minority norm <= 1e-6 of the majority norm).

Non-convex check: float64 L-BFGS on the full UFM (``d = K``) at a few ratios and weight decays, run at counts
scaled down by ``c = 1/25`` (``n_B = 4``) with :math:`\mu' = \mu/\sqrt c`: the convex problem of
:mod:`ufm.convex` is then *identical* (substitute :math:`X = \sqrt c X'`), so cosines and norm ratios are the same
and the L-BFGS objective is compared with the convex minimum of the scaled problem (``gap``).

What it is: Fang et al.'s figure of the mean cosine between minority classifiers against R (K = 10, 5 majority
classes, R in {1, 10, 100, 1000, infinity}) is of their layer-peeled model with norm *constraints*; ours is the UFM
with weight decay, on the same K and range of R, so the ratios at which collapse sets in are not comparable number
for number (and in the constrained model the minority classifiers do not vanish, in ours they do). Their Thm. 5 is
the limit R -> infinity; the finite-R collapse is their Finding 2 (numerical).

Sources: Fang et al. 2021 (arXiv 2101.12699), Thm. 5 and Finding 2; Hong & Ling 2023 (arXiv 2309.09725); ufm/theory/derivations.md
§5.5, §7, §9.4. Hong & Ling's :math:`\lambda_Z` is our :math:`\mu` (their convex program's nuclear-norm weight).
"""

import functools
import math

import jax
import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, runner
from ufm import convex

PAPER = "Fang et al. 2021; Hong & Ling 2023"
FIGURE = ("reproduces Fang et al. 2021's minority-collapse curve over the imbalance ratio (paper: norm-"
          "constrained layer-peeled model, K = 10; ours: weight-decay UFM) and checks Fang et al. Thm. 5")
RUNTIME = "36 s wall with a warm compilation cache (267 s cold under load ~4)"

_SETTINGS = ("ce", "ce+bias")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K_A = K_B = 5, n_B = 100, R in [1, 1000] (73 points), 4 lambdas, 31 mu values. ``"smoke"``: tiny."""
  c = ml_collections.ConfigDict()
  c.settings = _SETTINGS
  # Hong & Ling's bias decay for the "ce+bias" setting: their 0.01 multiplies ||b||^2 without the 1/2 of our
  # (lam_b/2)||b||^2 (derivations §7), so it is our 0.02.
  c.lam_b = 0.02
  c.K_A, c.K_B, c.n_B = 5, 5, 100
  c.R_max, c.num_R = 1000.0, 73  # Fang et al. plot R in {1, 10, 100, 1000} (and the limit R -> infinity)
  c.lams = (1e-4, 1e-3, 2.7e-3, 5e-3)
  c.n_A_hl, c.K_A_hl = 500, (5, 3)  # Hong & Ling: K = 10, n_A = 500, n_B = 100
  c.mu_min, c.mu_max, c.num_mu = 1e-3, 1e-2, 31
  c.R_check = (5, 25)  # L-BFGS ratios (integers; R = 5 = n_A_hl / n_B: the mu-panel check reuses its compile)
  c.mu_check = (2.7e-3, 4e-3, 5.5e-3, 7.5e-3)  # L-BFGS weight decays on the mu panel
  c.scale_down = 25  # L-BFGS at counts / scale_down, mu * sqrt(scale_down): the same convex problem
  c.num_refine = 64  # grid points of each stage of the threshold search
  c.tol, c.max_steps, c.seed, c.init_scale = 1e-11, 6000, 0, 0.1
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.settings = ("ce",)
    c.K_A, c.K_B, c.n_B, c.num_R, c.lams = 2, 2, 25, 5, (5e-3,)
    c.K_A_hl, c.num_mu = (2,), 3
    c.n_A_hl, c.R_check, c.mu_check, c.num_refine, c.max_steps = 25, (1,), (5e-3,), 4, 300  # one L-BFGS compile
  return c


def _Rs(c) -> np.ndarray:
  R_max = float(ufm.problem.check_real("R_max", c.R_max, lo=1.0, lo_open=True))
  return np.geomspace(1.0, R_max, _common.check_int("num_R", c.num_R, lo=2))


def sweep(c) -> dict:
  """The vmapped axes of the main convex grid: ``lam`` (outer) and the ratio ``R = n_A / n_B``."""
  return {"lam": _common.positive("lams", c.lams), "R": _Rs(c)}


def _validate(c, axes):
  settings = _common.check_settings(c.settings, allowed=_SETTINGS, key="settings")
  K_A = _common.check_int("K_A", c.K_A)
  K_B = _common.check_int("K_B", c.K_B, lo=2)
  n_B = float(ufm.problem.check_real("n_B", c.n_B, lo=0.0, lo_open=True))
  ufm.problem.check_real("lam_b", c.lam_b, lo=0.0)
  K_A_hl = tuple(_common.check_int("K_A_hl", k, lo=1, hi=K_A + K_B - 2) for k in c.K_A_hl)
  _common.check_int("n_A_hl", c.n_A_hl)
  mu_lo = float(ufm.problem.check_real("mu_min", c.mu_min, lo=0.0, lo_open=True))
  ufm.problem.check_real("mu_max", c.mu_max, lo=mu_lo, lo_open=True)
  _common.check_int("num_mu", c.num_mu, lo=2)
  R_check = tuple(_common.check_int("R_check", r) for r in c.R_check)
  ufm.problem.check_real("mu_check", c.mu_check, lo=0.0, lo_open=True)
  scale = _common.check_int("scale_down", c.scale_down)
  if (n_B / scale) != int(n_B / scale) or c.n_A_hl % scale:
    raise ValueError(f"scale_down = {scale}: allowed: a divisor of n_B = {c.n_B} and n_A_hl = {c.n_A_hl}")
  _common.check_int("num_refine", c.num_refine, lo=3)
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  ufm.problem.check_real("tol", c.tol, lo=0.0, lo_open=True)
  ufm.problem.check_real("init_scale", c.init_scale, lo=0.0, lo_open=True)
  _common.check_int("seed", c.seed, lo=0)
  return settings, axes, K_A, K_B, n_B, K_A_hl, R_check, scale


def _counts(K_A, K_B, n_A, n_B):
  """``(..., K)`` counts from broadcastable ``n_A``, ``n_B``."""
  n_A, n_B = np.broadcast_arrays(np.asarray(n_A, float), np.asarray(n_B, float))
  return np.concatenate([np.repeat(n_A[..., None], K_A, -1), np.repeat(n_B[..., None], K_B, -1)], -1)


@functools.partial(jax.jit, static_argnames=("K_A",))
def _stats_flat(X, lw, lh, *, K_A):
  return jax.vmap(lambda X, a, b: convex.minority_stats(convex.classifier_factor(X, a, b), K_A))(X, lw, lh)


def _stats(sol, lam_W, lam_H, K_A):
  """minority_stats of the convex minimiser over every batch axis (one jitted, vmapped call)."""
  batch = sol.X.shape[:-2]
  lw, lh = (np.broadcast_to(np.asarray(v, float), batch).reshape(-1) for v in (lam_W, lam_H))
  out = _stats_flat(sol.X.reshape((-1,) + sol.X.shape[-2:]), lw, lh, K_A=K_A)
  return {k: np.asarray(v).reshape(batch) for k, v in out.items()}


def _solve(c, setting, counts, lam):
  bias = _common.SETTINGS[setting][1]
  return convex.ce_convex(counts, lam, lam, c.lam_b if bias else 0.0, bias=bias,
                          hparams=convex.convex_hparams(tol=c.tol))


def _thresholds(c, setting, lams, K_A, K_B, n_B, R_max):
  """Smallest ``R`` in ``[1, R_max]`` where the minority classifiers coincide / vanish, per lam (NaN if none):
  a log grid of ``num_refine`` points, then the same number of points inside the bracketing interval."""
  out = {}
  for name, test in (("coincide", lambda s: s["spread_minor"] <= 1e-6),
                     ("vanish", lambda s: s["norm_minor"] <= 1e-6 * s["norm_major"])):
    lo = np.zeros(len(lams))
    hi = np.full(len(lams), math.log(R_max))
    found = np.zeros(len(lams), bool)
    for _ in range(2):
      t = np.linspace(0, 1, c.num_refine)
      logR = lo[:, None] + (hi - lo)[:, None] * t[None, :]
      sol = _solve(c, setting, _counts(K_A, K_B, n_B * np.exp(logR), n_B), np.asarray(lams)[:, None])
      hit = test(_stats(sol, np.asarray(lams)[:, None], np.asarray(lams)[:, None], K_A))
      first = np.argmax(hit, axis=1)
      any_hit = hit.any(axis=1)
      found = any_hit
      new_hi = np.where(any_hit, logR[np.arange(len(lams)), first], hi)
      new_lo = np.where(any_hit & (first > 0), logR[np.arange(len(lams)), np.maximum(first - 1, 0)], new_hi)
      lo, hi = new_lo, new_hi
    out[name] = np.where(found, np.exp(hi), np.nan)
  return out


def _lbfgs_point(ctx, tag, c, setting, counts, mu, K_A):
  """L-BFGS on the full UFM at ``counts`` and lam_W = lam_H = mu (one vmapped call over the seed axis)."""
  loss, bias = _common.SETTINGS[setting]
  p = ufm.make_problem(tuple(int(n) for n in counts), d=len(counts), lam_W=mu, lam_H=mu,
                       lam_b=c.lam_b if bias else 0.0, loss=loss, bias=bias, dtype=_common.dtype(c))
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=1e-10, dtype=_common.dtype(c))
  res = ctx.sweep(tag, ufm.lbfgs_reference, p, hp, axes={"seed": [c.seed]}, max_steps=c.max_steps)
  sol = jax.tree.map(lambda x: x[0], res.solution)
  s = {k: float(v) for k, v in convex.minority_stats(sol.params.W, K_A).items()}
  ref = _solve(c, setting, np.asarray(counts, float), mu)
  s["gap"] = (float(sol.objective) - float(ref.objective)) / abs(float(ref.objective))
  s["converged"] = bool(sol.converged)
  s["diverged"] = bool(sol.diverged)
  return s


_KEYS = ("cos_minor", "spread_minor", "norm_minor", "norm_major", "cos_major_minor")


def run(c, ctx) -> xr.Dataset:
  """Dims: ``(setting, lam, R)`` convex grid; ``(setting, lam, R_check)`` L-BFGS; ``(setting, K_A_hl, mu)``
  convex at Hong & Ling's counts; ``(setting, mu_check)`` L-BFGS there (with ``K_A``); ``(setting, lam)`` thresholds."""
  settings, axes, K_A, K_B, n_B, K_A_hl, R_check, scale = _validate(c, ctx.axes)
  lams, Rs = axes["lam"], axes["R"]
  mus = np.geomspace(float(c.mu_min), float(c.mu_max), c.num_mu)
  mu_check = np.asarray(c.mu_check, float)
  K = K_A + K_B
  parts = []
  for setting in settings:
    ds = xr.Dataset()
    sol = _solve(c, setting, _counts(K_A, K_B, n_B * Rs, n_B)[None], lams[:, None])
    st = _stats(sol, lams[:, None], lams[:, None], K_A)
    for k in _KEYS:
      ds[k] = (("lam", "R"), st[k])
    ds["kkt"] = (("lam", "R"), np.asarray(sol.kkt))
    ds["rank"] = (("lam", "R"), np.asarray(sol.rank))
    ds["converged"] = (("lam", "R"), np.asarray(sol.converged))
    ds["diverged"] = (("lam", "R"), np.asarray(sol.diverged))
    thr = _thresholds(c, setting, lams, K_A, K_B, n_B, float(Rs[-1]))
    ds["pred_R_coincide"] = ("lam", thr["coincide"])
    ds["pred_R_vanish"] = ("lam", thr["vanish"])
    # Hong & Ling's counts, against mu
    hl = {k: [] for k in _KEYS + ("kkt",)}
    for ka in K_A_hl:
      s2 = _solve(c, setting, _counts(ka, K - ka, c.n_A_hl, n_B), mus)
      st2 = _stats(s2, mus, mus, ka)
      for k in _KEYS:
        hl[k].append(st2[k])
      hl["kkt"].append(np.asarray(s2.kkt))
    for k, v in hl.items():
      ds[f"hl_{k}"] = (("K_A_hl", "mu"), np.asarray(v))
    # L-BFGS on the full non-convex UFM (scaled-down counts: the same convex problem)
    rows = []
    for lam in lams:
      row = []
      for R in R_check:
        counts = _counts(K_A, K_B, n_B * R / scale, n_B / scale)
        row.append(_lbfgs_point(ctx, f"minority_collapse[{setting},lam={lam:g},R={R}]", c, setting, counts,
                                lam * math.sqrt(scale), K_A))
      rows.append(row)
    for k in _KEYS + ("gap", "converged", "diverged"):
      ds[f"lbfgs_{k}"] = (("lam", "R_check"), np.asarray([[r[k] for r in row] for row in rows]))
    row = []  # at Hong & Ling's n_A, n_B with the main K_A (the same counts as R = n_A_hl / n_B: no new compile)
    for mu in mu_check:
      counts = _counts(K_A, K_B, c.n_A_hl / scale, n_B / scale)
      row.append(_lbfgs_point(ctx, f"minority_collapse[{setting},K_A={K_A},mu={mu:g}]", c, setting, counts,
                              mu * math.sqrt(scale), K_A))
    for k in _KEYS + ("gap", "converged", "diverged"):
      ds[f"hl_lbfgs_{k}"] = ("mu_check", np.asarray([r[k] for r in row]))
    parts.append(ds)
  ds = xr.concat(parts, dim=xr.DataArray(list(settings), dims="setting", name="setting"))
  ds = ds.assign_coords(lam=lams, R=Rs, R_check=np.asarray(R_check), K_A_hl=np.asarray(K_A_hl), mu=mus,
                        mu_check=mu_check)
  ds.attrs.update(K_A=K_A, K_B=K_B, n_B=n_B, n_A_hl=int(c.n_A_hl), lam_b=float(c.lam_b), scale_down=scale)
  return ds


def _floor(norm_major):
  """The zero level of :func:`ufm.convex.minority_stats` (relative 1e-6, absolute 1e-6)."""
  return np.maximum(1e-6 * np.asarray(norm_major), 1e-6)


def _ratio(norm_minor, norm_major):
  """Minority / majority norm; 0 where the minority norm is at the zero level, NaN where everything is 0."""
  a, b = np.asarray(norm_minor), np.asarray(norm_major)
  return np.where(b > 1e-6, np.where(a > _floor(b), a / np.maximum(b, 1e-300), 0.0), np.nan)


def summary(results: xr.Dataset, c) -> dict:
  """Per setting and lambda: the ratios R where the minority classifiers coincide and vanish; the L-BFGS checks'
  convergence and largest gap to the convex minimum; the convex solves' convergence and largest KKT residual."""
  a = results.attrs
  out = {"K_A": int(a["K_A"]), "K_B": int(a["K_B"]), "n_B": float(a["n_B"]), "lam_b": float(a["lam_b"]),
         "R_max": float(results.R.values[-1]), "settings": {}}
  for setting in results.setting.values:
    r = results.sel(setting=setting)
    ok_l, _ = runner.gate(np.concatenate([r.lbfgs_converged.values.ravel(), r.hl_lbfgs_converged.values.ravel()]),
                          np.concatenate([r.lbfgs_diverged.values.ravel(), r.hl_lbfgs_diverged.values.ravel()]))
    gaps = np.abs(np.concatenate([r.lbfgs_gap.values.ravel(), r.hl_lbfgs_gap.values.ravel()]))[ok_l]
    ok_c, _ = runner.gate(r.converged.values, r.diverged.values)
    fin = lambda v: None if not np.isfinite(v) else float(v)
    out["settings"][str(setting)] = {
        "lams": [float(v) for v in r.lam.values],
        "R_coincide": [fin(v) for v in r.pred_R_coincide.values], "R_vanish": [fin(v) for v in r.pred_R_vanish.values],
        "convex_runs": int(ok_c.size), "convex_converged": int(ok_c.sum()),
        "kkt": float(r.kkt.values[ok_c].max()) if ok_c.any() else None,
        "lbfgs_runs": int(ok_l.size), "lbfgs_converged": int(ok_l.sum()),
        "lbfgs_gap": float(gaps.max()) if gaps.size else None}
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v, spec: f"none ≤ {summary['R_max']:g}" if v is None else format(v, spec)
  parts = []
  for s, S in summary["settings"].items():
    label = "no bias" if s == "ce" else f"bias (λ_b = {summary['lam_b']:g})"
    thr = ", ".join(f"λ = {lam:g}: {f(rc, '.3g')} / {f(rv, '.3g')}" for lam, rc, rv in
                    zip(S["lams"], S["R_coincide"], S["R_vanish"]))
    parts.append(f"{label}: R where the minority classifiers coincide / vanish — {thr}; convex solves "
                 f"{S['convex_converged']}/{S['convex_runs']} converged (KKT ≤ {f(S['kkt'], '.0e')}); L-BFGS on the "
                 f"full UFM {S['lbfgs_converged']}/{S['lbfgs_runs']} converged, within {f(S['lbfgs_gap'], '.0e')} "
                 "of the convex minimum")
  return (f"{FIGURE}: K_A = {summary['K_A']} majority and K_B = {summary['K_B']} minority classes, n_B = "
          f"{summary['n_B']:g}, λ_W = λ_H = λ, R = n_A/n_B ∈ [1, {summary['R_max']:g}], float64 convex reference "
          "(`ufm.convex.ce_convex`). " + "; ".join(parts) + ". Fang et al.'s constrained model collapses at other "
          "ratios (their curve reaches cos = 1 at R = 100 or 1000 depending on the weight decay); the two are not "
          "comparable number for number.")


def plot(results: xr.Dataset, c):
  """Rows: settings. Columns: cos(minority, minority) vs R; minority/majority norm vs R; Hong & Ling's counts vs
  mu; majority-minority angle vs R. Lines: convex reference; markers: L-BFGS on the full UFM; dotted
  verticals: R_coincide."""
  from matplotlib import pyplot as plt
  settings = list(results.setting.values)
  fig, axs = plt.subplots(len(settings), 4, figsize=(18, 3.9 * len(settings)), squeeze=False,
                          constrained_layout=True)
  R, lams = results.R.values, results.lam.values
  a = results.attrs
  for row, setting in zip(axs, settings):
    r = results.sel(setting=setting)
    label = "no bias" if setting == "ce" else f"bias, λ_b = {a['lam_b']:g}"
    for i, lam in enumerate(lams):
      col = f"C{i}"
      rr = r.isel(lam=i)
      okc = runner.gate(rr.converged.values, rr.diverged.values)[0]
      okl = runner.gate(rr.lbfgs_converged.values, rr.lbfgs_diverged.values)[0]
      keep = lambda v, m: np.where(m, np.asarray(v, float), np.nan)
      row[0].plot(R, keep(rr.cos_minor, okc), color=col, lw=1.6, label=f"λ = {lam:g}")
      row[0].plot(r.R_check, keep(rr.lbfgs_cos_minor, okl), "o", color=col, mfc="none", ms=7)
      row[1].plot(R, keep(_ratio(rr.norm_minor, rr.norm_major), okc), color=col, lw=1.6, label=f"λ = {lam:g}")
      row[1].plot(r.R_check, keep(_ratio(rr.lbfgs_norm_minor, rr.lbfgs_norm_major), okl), "o", color=col, mfc="none",
                  ms=7)
      ang = np.degrees(np.arccos(np.clip(rr.cos_major_minor.values, -1, 1)))
      ang = np.where(rr.norm_minor.values > _floor(rr.norm_major.values), ang, np.nan)
      row[3].plot(R, ang, color=col, lw=1.6, label=f"λ = {lam:g}")
      ang_l = np.degrees(np.arccos(np.clip(rr.lbfgs_cos_major_minor.values, -1, 1)))
      ang_l = np.where(rr.lbfgs_norm_minor.values > _floor(rr.lbfgs_norm_major.values), ang_l, np.nan)
      row[3].plot(r.R_check, ang_l, "o", color=col, mfc="none", ms=7)
      thr = float(rr.pred_R_coincide)
      if np.isfinite(thr):
        for ax in row[:2]:
          ax.axvline(thr, color=col, ls=":", lw=1.2)
    for j, ka in enumerate(r.K_A_hl.values):
      rk = r.isel(K_A_hl=j)
      col = f"C{j + 5}"
      row[2].plot(r.mu, rk.hl_cos_minor, color=col, lw=1.6, label=f"cos, K_A = {ka}")
      row[2].plot(r.mu, _ratio(rk.hl_norm_minor, rk.hl_norm_major), color=col, lw=1.2, ls="--",
                  label=f"‖w_min‖/‖w_maj‖, K_A = {ka}")
      if ka == a["K_A"]:
        row[2].plot(r.mu_check, r.hl_lbfgs_cos_minor, "o", color=col, mfc="none", ms=7)
        row[2].plot(r.mu_check, _ratio(r.hl_lbfgs_norm_minor, r.hl_lbfgs_norm_major), "s", color=col, mfc="none",
                    ms=6)
    gap = max(float(np.max(np.abs(r.lbfgs_gap))), float(np.max(np.abs(r.hl_lbfgs_gap))))
    row[0].set(xscale="log", xlabel=r"$R = n_A/n_B$", ylabel="mean cos(w_k, w_k'), minority pairs", ylim=(-0.2, 1.05))
    row[0].set_title(f"{label}: cos between minority classifiers\n(1 = coincide; dotted: exact-coincidence ratio)",
                     fontsize=9)
    row[1].set(xscale="log", xlabel=r"$R = n_A/n_B$", ylabel="mean ‖w_minor‖ / mean ‖w_major‖")
    row[1].set_title(f"{label}: minority / majority classifier norm\n(0 = vanished; blank: W = 0)", fontsize=9)
    row[2].set(xscale="log", xlabel=r"$\mu = \sqrt{\lambda_W\lambda_H}$", ylim=(-0.2, 1.05))
    row[2].set_title(f"{label}: against μ at Hong & Ling's counts\nn_A = {a['n_A_hl']}, n_B = {a['n_B']:g}, K = 10 "
                     "(solid: cos; dashed: norm ratio)", fontsize=9)
    row[3].set(xscale="log", xlabel=r"$R = n_A/n_B$", ylabel="angle(w_major, w_minor) [deg]")
    row[3].set_title(f"{label}: majority-minority angle (blank: vanished)\n"
                     f"max |L-BFGS gap to convex minimum| = {gap:.1e}", fontsize=9)
    for ax in row:
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7, loc="best")
  kkt = float(results.kkt.max())
  conv = runner.convergence(results)
  left = conv["runs"] - conv["converged"]
  fig.suptitle((f"{left} of {conv['runs']} solves did not converge (not drawn). " if left else
                f"All {conv['runs']} solves converged. ")
               + f"Minority collapse, CE-UFM, K_A = {a['K_A']} majority / K_B = {a['K_B']} minority classes, "
               f"n_B = {a['n_B']:g}, λ_W = λ_H = λ.\nLines: convex reference (float64, KKT ≤ {kkt:.0e}). "
               "Markers: L-BFGS "
               f"on the full non-convex UFM (d = K, counts / {a['scale_down']} and μ·√{a['scale_down']}: the same "
               "convex problem)", fontsize=10)
  return fig
