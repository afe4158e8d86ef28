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
from experiments import _common
from ufm import geometry, spherical

PAPER = "Pernici et al. 2022; Shen et al. 2023; Xiao et al. 2024 (FedLoGe); Jiang et al. 2024"
FIGURE = "new (UFM analogue of the papers' fixed-classifier comparisons, which train networks)"
RUNTIME = "50 s CPU; 210 s wall measured under load from other jobs"

CLASSIFIERS = ("learned", "etf", "d_simplex", "ebv", "sparse_etf")
TRACE_METRICS = ("nc1_ratio", "gnc2", "self_duality_classwise")
ALIGNMENT = ("cos_mean", "cos_min", "accuracy", "margin")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 10, d = 9, balanced (n = 5) and long-tailed (n_max = 20, rho = 10) counts, tau = 0.2, 4 seeds,
  3000 steps; EBV alpha = 0.15, sparse ETF sparsity 0.5 (0.6 leaves a row with one entry at d = 9).
  ``"smoke"``: K = 4, d = 3, balanced only, ETF and d-simplex only, 2 seeds, 20 steps."""
  c = ml_collections.ConfigDict()
  c.K, c.d = 10, 9
  c.profiles = ("balanced", "long-tailed")
  c.n, c.n_max, c.rho = 5, 20, 10.0
  c.classifiers = CLASSIFIERS
  c.tau = 0.2
  c.seed, c.num_seeds = 0, 4
  c.lr, c.momentum, c.num_steps, c.log_every = 0.1, 0.9, 3000, 50
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
  hp = _common.gd_hparams(c)
  parts = []
  for p in profiles:
    per = []
    for name in Ws:
      prob = problems[(p, name)]
      res = ctx.sweep(f"fixed_classifiers[{p},{name}]", ufm.gradient_descent, prob, hp, axes=ctx.axes,
                      num_steps=c.num_steps, log_every=c.log_every, trace_metrics=TRACE_METRICS)
      ds = _common.sweep_dataset(res, log_every=c.log_every)
      al = _alignment(res.solution.params, prob.labels, K=prob.K)
      for k in ALIGNMENT:
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
  """:func:`ufm.geometry.classifier_alignment` of every seed's solution."""
  return jax.vmap(lambda P: geometry.classifier_alignment(P.W, P.H, labels, K))(params)


def plot(results: xr.Dataset, c):
  """Rows: count profiles. Columns: objective, NC1 ratio, GNC2 of the centred means, class-wise self-duality (traces,
  mean and min-max over seeds), and the final cosine of each class mean with its classifier (min over classes)."""
  from matplotlib import pyplot as plt
  profiles = list(results.profile.values)
  cols = (("trace_objective", "objective", True), ("trace_nc1_ratio", r"tr$\Sigma_W$/tr$\Sigma_B$", True),
          ("trace_gnc2", "GNC2 (centred means)", False),
          ("trace_self_duality_classwise", r"avg$_k\|\hat w_k - \hat\mu_k\|$", True))
  fig, axs = plt.subplots(len(profiles), len(cols) + 1, figsize=(4.0 * (len(cols) + 1), 3.3 * len(profiles)),
                          squeeze=False, constrained_layout=True)
  x = results.step.values
  for row, p in zip(axs, profiles):
    r = results.sel(profile=p)
    for ax, (var, title, logy) in zip(row, cols):
      for i, name in enumerate(r.classifier.values):
        Y = r[var].sel(classifier=name).values
        if logy:
          _common.spread(ax, x, Y, color=f"C{i}", label=name, floor=1e-16)
        else:
          _common.spread(ax, x, Y, color=f"C{i}", label=name, logy=False)
      ax.set(xscale="log", yscale="log" if logy else "linear", xlabel="step", title=f"{p}: {title}")
    ax = row[-1]
    names = list(r.classifier.values)
    for i, name in enumerate(names):
      v = r.cos_min.sel(classifier=name).values
      ax.scatter(np.full(v.shape, i), v, color=f"C{i}", s=14)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_title(f"{p}: final min$_k$ cos($w_k$, $\\bar h_k$)", fontsize=9)
    row[0].legend(fontsize=7)
  fig.suptitle(f"Spherical CE-UFM, K={results.attrs['K']}, d={results.attrs['d']}, tau={results.attrs['tau']:g}: "
               f"learned vs fixed classifiers; {results.sizes['seed']} seeds", fontsize=10)
  return fig
