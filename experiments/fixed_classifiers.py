r"""Learned vs fixed classifiers on the same spherical CE-UFM problems: simplex ETF, d-simplex, EBV, sparse ETF.

The spherical temperature-scaled CE-UFM (:mod:`ufm.spherical`) with ``K = 10`` classes in ``d = 9``
dimensions, balanced and long-tailed counts, solved by Riemannian gradient descent (``num_seeds`` seeds
vmapped) with the classifier either learned or fixed (:func:`ufm.geometry.fixed_classifier`): the simplex
ETF (Papyan et al. 2020; fixed as in Zhu et al. 2021 and Yang et al. 2022), Pernici et al.'s ``d``-simplex
(arXiv 2103.15632), equiangular basis vectors with :math:`|\cos| \le \alpha` (Shen et al. 2023,
arXiv 2303.11637) and FedLoGe's static sparse ETF (Xiao et al. 2024, arXiv 2401.08977). Traced along the
run: the objective, :math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B`, GNC2 of the centred means and the
class-wise self-duality; at the end, :func:`ufm.geometry.classifier_alignment` (cosine of each class mean
with its classifier, accuracy, margin on the sphere).
"""

import functools

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common, runner
from ufm import geometry, spherical

PAPER = "Pernici et al. 2022; Shen et al. 2023; Xiao et al. 2024 (FedLoGe); Jiang et al. 2024"
FIGURE = "new (UFM analogue of the papers' fixed-classifier comparisons, which train networks)"
RUNTIME = "61 s wall (load ~9; compile 36 s)"

CLASSIFIERS = ("learned", "etf", "d_simplex", "ebv", "sparse_etf")
#: Traced along the run. One centring convention in this figure: a fixed classifier has no bias to absorb a global
#: feature mean, so the geometry of the class means is measured on the *uncentred* means (GNC2 and the cosines with
#: the classifiers, at the end of the run); tr Sigma_W / tr Sigma_B is the same either way.
TRACE_METRICS = ("nc1_ratio",)
ALIGNMENT = ("cos_mean", "cos_min", "accuracy", "margin")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 10, d = 9, balanced (n = 5) and long-tailed (n_max = 20, rho = 10) counts, tau = 0.2, 4 seeds,
  8000 steps; EBV alpha = 0.15, sparse ETF sparsity 0.5 (0.6 leaves a row with one entry at d = 9).
  ``"smoke"``: K = 4, d = 3, balanced only, ETF and d-simplex only, 2 seeds, 20 steps."""
  c = ml_collections.ConfigDict()
  c.K, c.d = 10, 9
  c.profiles = ("balanced", "long-tailed")
  c.n, c.n_max, c.rho = 5, 20, 10.0
  c.classifiers = CLASSIFIERS
  c.tau = 0.2
  c.seed, c.num_seeds = 0, 4
  # 3000 steps left every run above gtol = 1e-10 (|grad| 1e-10..9e-6, measured); 8000 steps at gtol = 1e-9
  # (the objective is ~0.03: a gradient of 1e-9 moves it by ~1e-18 per unit step).
  c.lr, c.momentum, c.num_steps, c.log_every, c.gtol = 0.1, 0.9, 8000, 100, 1e-9
  c.ebv_alpha, c.sparsity, c.sparse_steps = 0.15, 0.5, 1000
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.K, c.d, c.profiles, c.num_seeds, c.num_steps, c.log_every = 4, 3, ("balanced",), 2, 20, 10
    c.classifiers = ("etf", "d_simplex")  # one compiled program (the fixed classifiers share it); EBV, sparse ETF:
    # tests/test_geometry.py
    c.ebv_alpha, c.sparsity, c.sparse_steps = 0.5, 0.1, 10
  return c



def _counts(c, profile):
  if profile == "balanced":
    return ufm.balanced_counts(c.K, c.n)
  return ufm.long_tailed_counts(c.K, n_max=c.n_max, rho=c.rho)


def _classifiers(c, key, dt):
  out = {}
  for name in _common.check_settings(c.classifiers, allowed=CLASSIFIERS, key="classifiers"):
    if name == "learned":
      out[name] = None
    elif name == "ebv":
      out[name] = geometry.equiangular_basis_vectors(jax.random.fold_in(key, 1), c.K, c.d, alpha=c.ebv_alpha,
                                                     dtype=dt).W
    elif name == "sparse_etf":
      out[name] = geometry.sparse_etf(jax.random.fold_in(key, 2), c.K, c.d, sparsity=c.sparsity,
                                      num_steps=c.sparse_steps, dtype=dt).W
    else:
      out[name] = geometry.fixed_classifier(name, c.K, c.d, key=jax.random.fold_in(key, 3), dtype=dt)
  return out


def run(c, ctx) -> xr.Dataset:
  """Dims ``(profile, classifier, seed, step)`` for the traces, ``(profile, classifier, seed)`` for final values,
  ``(classifier,)`` for the fixed classifiers' largest pairwise cosine."""
  profiles = _common.check_settings(c.profiles, allowed=("balanced", "long-tailed"), key="profiles")
  _common.check_steps(c)
  dt = _common.dtype(c)
  counts = {p: _counts(c, p) for p in profiles}
  key = jax.random.key(int(c.seed))
  Ws = _classifiers(c, key, dt)
  problems = {(p, name): spherical.make_spherical_problem(counts[p], d=c.d, tau=c.tau, W_fixed=W, dtype=dt)
              for p in profiles for name, W in Ws.items()}
  hp = _common.gd_hparams(c, gtol=float(ufm.problem.check_real("gtol", c.gtol, lo=0.0, lo_open=True)))
  parts = []
  for p in profiles:
    per = []
    for name in Ws:
      prob = problems[(p, name)]
      res = ctx.sweep(f"fixed_classifiers[{p},{name}]", ufm.gradient_descent, prob, hp, axes=ctx.axes,
                      num_steps=c.num_steps, log_every=c.log_every, trace_metrics=TRACE_METRICS)
      ds = _common.sweep_dataset(res, log_every=c.log_every)
      al = _alignment(res.solution.params, prob.labels, K=prob.K)
      for k in ALIGNMENT + ("gnc2_uncentred",):
        ds[k] = ("seed", np.asarray(al[k]))
      per.append(ds)
    parts.append(xr.concat(per, dim=xr.DataArray(list(Ws), dims="classifier", name="classifier")))
  out = xr.concat(parts, dim=xr.DataArray(list(profiles), dims="profile", name="profile"))
  maxcos = [np.nan if W is None else float(np.max((W @ W.T)[~np.eye(c.K, dtype=bool)])) for W in Ws.values()]
  out["pred_max_cos"] = ("classifier", np.asarray(maxcos))  # NaN for the learned classifier (nothing fixed)
  out.attrs.update(K=c.K, d=c.d, tau=c.tau, counts=[list(counts[p]) for p in profiles])
  return out


@functools.partial(jax.jit, static_argnames="K")
def _alignment(params, labels, *, K):
  """:func:`ufm.geometry.classifier_alignment` of every seed's solution, and GNC2 of its uncentred class means."""
  def one(P):
    out = geometry.classifier_alignment(P.W, P.H, labels, K)
    out["gnc2_uncentred"] = ufm.metrics.gnc2(ufm.metrics.class_means(P.H, labels, K)[0])
    return out
  return jax.vmap(one)(params)


def summary(results: xr.Dataset, c) -> dict:
  """Per profile and classifier, over the converged seeds: the final objective, tr Sigma_W / tr Sigma_B, GNC2 of the
  uncentred means, min cos(w_k, mean_k), accuracy; and the fixed classifiers' largest pairwise cosine."""
  out = {"K": int(results.attrs["K"]), "d": int(results.attrs["d"]), "tau": float(results.attrs["tau"]),
         "seeds": int(results.sizes["seed"]), "steps": int(results.step.values[-1]), "profiles": {}}
  for p in results.profile.values:
    rows = {}
    for name in results.classifier.values:
      r = results.sel(profile=p, classifier=name)
      ok, _ = runner.gate(r.converged.values, r.diverged.values)
      pick = lambda v, fn: float(fn(np.asarray(v)[ok])) if ok.any() else None
      rows[str(name)] = {"converged": int(ok.sum()), "objective": pick(r.objective.values, np.max),
                         "nc1_ratio": pick(r.trace_nc1_ratio.values[:, -1], np.max),
                         "gnc2": pick(r.gnc2_uncentred.values, np.mean), "cos_min": pick(r.cos_min.values, np.min),
                         "accuracy": pick(r.accuracy.values, np.min),
                         "max_cos": None if not np.isfinite(r.pred_max_cos) else float(r.pred_max_cos)}
    out["profiles"][str(p)] = rows
    if {"etf", "d_simplex"} <= set(map(str, results.classifier.values)):
      o = results.objective.sel(profile=p)
      out["profiles"][str(p)]["etf"]["vs_d_simplex"] = float(np.max(np.abs(o.sel(classifier="etf").values
                                                                          - o.sel(classifier="d_simplex").values)))
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v, spec: "n/a" if v is None else format(v, spec)
  parts = []
  for p, rows in summary["profiles"].items():
    low = min(R["objective"] for R in rows.values() if R["objective"] is not None)
    best = ", ".join(n for n, R in rows.items() if R["objective"] is not None and R["objective"] <= low * (1 + 1e-9))
    items = "; ".join(f"{n}: {R['converged']}/{summary['seeds']} converged, objective {f(R['objective'], '.4g')}, "
                      f"GNC2 {f(R['gnc2'], '.4f')}, min cos(w_k, mean_k) {f(R['cos_min'], '.4f')}"
                      + ("" if R["max_cos"] is None else f" (largest classifier cosine {R['max_cos']:.3f})")
                      for n, R in rows.items())
    same = rows.get("etf", {}).get("vs_d_simplex")
    parts.append(f"{p} counts — {items}; lowest objective (to 1e-9 relative): {best}"
                 + ("" if same is None else f"; etf and d_simplex final objectives differ by at most {same:.0e}"))
  return (f"{FIGURE}: spherical CE-UFM (features and classifier rows on the unit sphere, temperature "
          f"τ = {summary['tau']:g}), K = {summary['K']}, d = {summary['d']}, {summary['steps']:,} Riemannian GD steps, "
          f"{summary['seeds']} seeds; class-mean geometry on uncentred means throughout. " + ". ".join(parts)
          + " (for K = d + 1 the d-simplex is the simplex ETF up to a rotation).")


def plot(results: xr.Dataset, c):
  """Rows: count profiles. Columns: objective and tr Sigma_W / tr Sigma_B along the run (mean and min-max over the
  converged seeds), and at the end: GNC2 of the uncentred class means, min_k cos(w_k, mean_k) (uncentred), per
  classifier. Unconverged seeds are left out and counted in the title."""
  from matplotlib import pyplot as plt
  profiles = list(results.profile.values)
  cols = (("trace_objective", "objective"), ("trace_nc1_ratio", r"tr$\Sigma_W$/tr$\Sigma_B$"))
  fig, axs = plt.subplots(len(profiles), len(cols) + 2, figsize=(4.2 * (len(cols) + 2), 3.4 * len(profiles)),
                          squeeze=False, constrained_layout=True)
  x = results.step.values
  notes = []
  for row, p in zip(axs, profiles):
    r = results.sel(profile=p)
    names = list(r.classifier.values)
    masks = {}
    for i, name in enumerate(names):
      ok, note = runner.gate(r.converged.sel(classifier=name).values, r.diverged.sel(classifier=name).values)
      masks[name] = ok
      notes += [f"{p}/{name}: {note}"] if note else []
    for ax, (var, title) in zip(row, cols):
      for i, name in enumerate(names):
        style = dict(_common.STYLES[i % len(_common.STYLES)], markevery=0.15, ms=4)
        _common.spread(ax, x, r[var].sel(classifier=name).values[masks[name]], color=f"C{i}", label=name,
                       floor=1e-16, **style)
      ax.set(xscale="log", yscale="log", xlabel="step", title=f"{p}: {title}")
    for ax, var, title in ((row[-2], "gnc2_uncentred", "final GNC2 (uncentred means)"),
                           (row[-1], "cos_min", r"final min$_k$ cos($w_k$, $\bar h_k$) (uncentred)")):
      for i, name in enumerate(names):
        v = r[var].sel(classifier=name).values[masks[name]]
        ax.scatter(np.full(v.shape, i), v, color=f"C{i}", s=16, marker=_common.STYLES[i % len(_common.STYLES)]["marker"])
      ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
      ax.set_title(f"{p}: {title}", fontsize=9)
    row[0].legend(fontsize=7)
  fig.suptitle(f"Spherical CE-UFM, K={results.attrs['K']}, d={results.attrs['d']}, tau={results.attrs['tau']:g}: "
               f"learned vs fixed classifiers; {results.sizes['seed']} seeds; "
               + ("; ".join(notes) if notes else "every run converged")
               + ".\netf and d_simplex draw the same curves when K = d + 1 (the same simplex up to a rotation)",
               fontsize=10)
  return fig
