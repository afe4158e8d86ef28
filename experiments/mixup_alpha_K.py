r"""Effect of the mixup parameter alpha and of K on the geometry of the mixup UFM, vmapped over alpha and seeds.

For each ``K`` (a Python loop: shapes change), float64 L-BFGS (:func:`ufm.solvers.lbfgs_reference`) on the
Gauss–Jacobi quadrature objectives of :mod:`ufm.mixup` (``Q`` nodes of Beta(alpha, alpha); ``Q`` odd so that
:math:`\lambda = 1/2` is a node), vmapped over ``alpha`` (a leaf: the nodes and weights are computed from it inside
the program) and seeds through :func:`ufm.sweep.sweep`:

* **input mixup, learned classifier** (bias-free CE): the ETF error of ``W``, its mean row norm :math:`\rho`, the
  out-of-plane part of the mixed features, and the confidence of the mixed feature at :math:`\lambda = 1/2`, against
  :func:`ufm.theory.mixup_confidence` evaluated at the *measured* :math:`\rho`. Derived prediction: each mixed feature
  solves its own problem given ``W``, so alpha acts only through ``W``; if ``W`` stays a simplex ETF, the geometry is the
  fixed-ETF theory at :math:`\rho(\alpha)`.
* **manifold mixup** (learned ``W``, shared sample features ``H``): NC1 of ``H``, the ETF error of ``W`` and the
  confidence of the midpoint :math:`\tfrac12(\bar h_c + \bar h_{c'})` of two class means.

Source: Fisher, Meng, Papyan (ICLR 2024, arXiv 2402.06171): mixup's effect on the last-layer geometry and its
dependence on alpha; the objectives and the derivation are in :mod:`ufm.mixup` and derivations §2, §11 Part B.
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import jax.numpy as jnp
import ufm
from experiments import _common, runner
from ufm import metrics, mixup, theory

PAPER = "Fisher, Meng, Papyan 2024"
FIGURE = "new (alpha and K sweeps of the mixup UFM of Fisher et al. 2024 Sec. 3)"
RUNTIME = "508 s wall (load ~8, 2 cores shared with other jobs; 168 s CPU)"

_MODELS = ("input", "manifold")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K in {3, 5, 10}, alpha in {0.1, 0.2, 0.5, 1, 2, 5}, Q = 9, 2 seeds, lam_W = 5e-3, lam_H = 0.05, at most
  5000 L-BFGS steps."""
  c = ml_collections.ConfigDict()
  c.models = _MODELS
  c.Ks = (3, 5, 10)
  c.alphas = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
  c.num_lam = 9
  c.n = 2                     # samples per class (manifold mixup)
  c.lam_W, c.lam_H = 5e-3, 0.05
  c.lam_H_manifold = 5e-3     # the manifold objective has the plain UFM normalisation (lam_H/2 ||H||_F^2)
  c.seed, c.num_seeds = 0, 2
  c.max_steps, c.init_scale = 5000, 0.5  # 2000 left 4 of 36 input-mixup runs unconverged (measured)
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.models, c.Ks, c.alphas, c.num_lam, c.num_seeds, c.max_steps = ("input",), (3,), (0.5, 2.0), 3, 1, 30
  return c


def sweep(c) -> dict:
  """The vmapped axes: ``alpha`` and seeds (``K`` is a Python loop)."""
  return {"alpha": _common.positive("alphas", c.alphas), "seed": _common.seeds(c)}


def _validate(c, axes):
  models = _common.check_settings(c.models, allowed=_MODELS, key="models")
  Ks = tuple(_common.check_int("Ks", K, lo=2, hi=20) for K in c.Ks)
  if not Ks or len(set(Ks)) != len(Ks):
    raise ValueError(f"Ks = {c.Ks!r}: allowed: distinct integers in [2, 20]")
  q = _common.check_int("num_lam", c.num_lam, lo=1)
  if q % 2 == 0:
    raise ValueError(f"num_lam = {q}: allowed: odd (lambda = 1/2 must be a node)")
  _common.check_int("n", c.n)
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  for name in ("lam_W", "lam_H", "lam_H_manifold", "init_scale"):
    ufm.problem.check_real(name, c[name], lo=0.0, lo_open=True)
  dt = _common.dtype(c)
  problems = {}
  for K in Ks:
    if "input" in models:
      problems[("input", K)] = mixup.make_input_mixup_problem(K, d=K, lam_H=c.lam_H, lam_W=c.lam_W, fixed_W=False,
                                                              alpha=1.0, num_lam=q, dtype=dt)
    if "manifold" in models:
      problems[("manifold", K)] = mixup.make_manifold_mixup_problem(
          ufm.balanced_counts(K, c.n), d=K, lam_W=c.lam_W, lam_H=c.lam_H_manifold, alpha=1.0, num_lam=q, dtype=dt)
  return models, Ks, axes, problems


def _distinct_pairs(K: int) -> tuple[np.ndarray, np.ndarray]:
  A, B = np.nonzero(~np.eye(K, dtype=bool))
  return A, B


def _input_measures(params, problem, alpha):
  """ETF error and mean row norm of W, and over the pairs c != c' at the middle node (lam = 1/2): the confidence,
  the relative out-of-plane residual (all nodes), and the logit gap |z_c - z_c'| / |z_c|. Vectorised over pairs."""
  p = problem.replace(alpha=alpha)
  W, K, Q = params.W, problem.K, problem.num_lam
  Hm = params.H.reshape(problem.d, K, K, Q)
  mid = Q // 2
  A, B = _distinct_pairs(K)

  def one(a, b):
    h = Hm[:, a, b, :]
    z = W @ h[:, mid]
    return jnp.max(jax.nn.softmax(z)), jnp.abs(z[a] - z[b]) / jnp.abs(z[a]), jnp.max(
        mixup.plane_coordinates(W, a, b, h)[2])

  conf, gap, resid = jax.vmap(one)(jnp.asarray(A), jnp.asarray(B))
  lam_mid = mixup.mixed_features(params, p)[1][mid]
  return dict(etf_error_W=metrics.etf_error(W.T), rho=jnp.mean(jnp.linalg.norm(W, axis=1)),
              confidence_half=jnp.mean(conf), resid=jnp.max(resid), gap_half=jnp.max(gap), lam_mid=lam_mid)


def _manifold_measures(params, problem):
  W, H, K = params.W, params.H, problem.K
  labels = problem.labels
  M, _, _ = metrics.class_means(H, labels, K)
  A, B = np.triu_indices(K, 1)
  Z = W @ (0.5 * (M[:, A] + M[:, B]))  # logits of the midpoints of two class means, K x pairs
  return dict(nc1=metrics.nc1(H, labels, K), etf_error_W=metrics.etf_error(W.T),
              rho=jnp.mean(jnp.linalg.norm(W, axis=1)), confidence_half=jnp.mean(jnp.max(jax.nn.softmax(Z, axis=0), 0)))


def run(c, ctx) -> xr.Dataset:
  """Dataset with dims ``(K, alpha, seed)``: ``input_*`` and ``manifold_*`` measures, the solver flags, and
  ``input_theory_confidence_half`` (the fixed-ETF closed form at the measured rho)."""
  models, Ks, axes, problems = _validate(c, ctx.axes)
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, dtype=_common.dtype(c))
  alphas = jnp.asarray(axes["alpha"], _common.dtype(c))
  rows = {}
  for (model, K), p in problems.items():
    res = ctx.sweep(f"mixup_alpha_K[{model},K={K}]", ufm.lbfgs_reference, p, hp, axes=axes, max_steps=c.max_steps)
    sol = res.solution
    if model == "input":
      fn = jax.vmap(jax.vmap(lambda q, a: _input_measures(q, p, a), in_axes=(0, None)), in_axes=(0, 0))
      meas = jax.jit(fn)(sol.params, alphas)
      th = theory.mixup_confidence(0.5, K, lam_H=c.lam_H, rho=np.asarray(meas["rho"]))
      meas["theory_confidence_half"] = th
    else:
      fn = jax.vmap(jax.vmap(lambda q: _manifold_measures(q, p)))
      meas = jax.jit(fn)(sol.params)
    for k in ("objective", "grad_norm", "converged", "diverged"):
      meas[k] = getattr(sol, k)
    for k, v in meas.items():
      rows.setdefault(f"{model}_{k}", {})[K] = np.asarray(v)
  ds = xr.Dataset({name: (("K", "alpha", "seed"), np.stack([per_K[K] for K in Ks])) for name, per_K in rows.items()},
                  coords={"K": np.asarray(Ks), "alpha": axes["alpha"], "seed": axes["seed"]})
  ds.attrs.update(num_lam=c.num_lam, n=c.n, lam_W=c.lam_W, lam_H=c.lam_H, lam_H_manifold=c.lam_H_manifold)
  return ds


def _ok(results, model):
  """The converged runs of ``model`` (dims ``K, alpha, seed``) and the note on those left out."""
  return runner.gate(results[f"{model}_converged"].values, results[f"{model}_diverged"].values)


def summary(results: xr.Dataset, c) -> dict:
  """Per model: converged runs; per K over the converged runs: the largest ETF error of W, the rho and confidence
  range over alpha; for input mixup the largest |measured - fixed-ETF theory| of the confidence at lambda = 1/2."""
  out = {"Ks": [int(k) for k in results.K.values], "alphas": [float(a) for a in results.alpha.values],
         "seeds": int(results.sizes["seed"]), "num_lam": int(results.attrs["num_lam"]), "models": {}}
  for model in ("input", "manifold"):
    if f"{model}_converged" not in results:
      continue
    ok, _ = _ok(results, model)
    M = {"runs": int(ok.size), "converged": int(ok.sum()), "per_K": []}
    for i, K in enumerate(results.K.values):
      m = ok[i]
      row = {"K": int(K), "converged": int(m.sum())}
      conf = results[f"{model}_confidence_half"].values[i][m]
      row["conf_min"], row["conf_max"] = (float(conf.min()), float(conf.max())) if conf.size else (None, None)
      if model == "input":
        row["etf_max"] = float(results.input_etf_error_W.values[i][m].max()) if m.any() else None
        rho = results.input_rho.values[i][m]
        row["rho_min"], row["rho_max"] = (float(rho.min()), float(rho.max())) if rho.size else (None, None)
        dev = np.abs(results.input_confidence_half.values[i] - results.input_theory_confidence_half.values[i])[m]
        row["theory_dev"] = float(dev.max()) if dev.size else None
      else:
        row["nc1_max"] = float(results.manifold_nc1.values[i][m].max()) if m.any() else None
      M["per_K"].append(row)
    out["models"][model] = M
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v, spec: "n/a" if v is None else format(v, spec)
  parts = []
  if "input" in summary["models"]:
    M = summary["models"]["input"]
    parts.append(f"input mixup, learned W: {M['converged']}/{M['runs']} runs converged; " + "; ".join(
        f"K = {R['K']}: ETF error of W ≤ {f(R['etf_max'], '.0e')}, ρ {f(R['rho_min'], '.3f')}–{f(R['rho_max'], '.3f')}"
        f", confidence at λ = 1/2 {f(R['conf_min'], '.4f')}–{f(R['conf_max'], '.4f')}, within "
        f"{f(R['theory_dev'], '.0e')} of the fixed-ETF closed form at the measured ρ" for R in M["per_K"]))
  if "manifold" in summary["models"]:
    M = summary["models"]["manifold"]
    parts.append(f"manifold mixup: {M['converged']}/{M['runs']} runs converged; " + "; ".join(
        f"K = {R['K']}: NC1 of H ≤ {f(R['nc1_max'], '.0e')} (rounding level), confidence of the mixed class means "
        f"{f(R['conf_min'], '.4f')}–{f(R['conf_max'], '.4f')}" for R in M["per_K"]))
  return (f"{FIGURE}: float64 L-BFGS on the Gauss–Jacobi objectives (Q = {summary['num_lam']} nodes), α ∈ "
          f"{{{', '.join(f'{a:g}' for a in summary['alphas'])}}}, {summary['seeds']} seeds, over α across the "
          "converged runs — " + ". ".join(parts) + ".")


def plot(results: xr.Dataset, c):
  """Panels against alpha, one line per K (mean over the converged seeds; unconverged runs left out and counted):
  input mixup (ETF error of W, rho, confidence at 1/2 vs theory) and manifold mixup (NC1, confidence of mixed class
  means)."""
  from matplotlib import pyplot as plt
  has_in = "input_rho" in results
  has_man = "manifold_nc1" in results
  panels = ([("input_etf_error_W", "input mixup: ETF error of $W$", True), ("input_rho", r"input mixup: $\rho$ = mean "
                                                                      r"$\|w_k\|$", False),
             ("input_confidence_half", r"input mixup: confidence at $\lambda=1/2$", False)] if has_in else []) + \
           ([("manifold_nc1", "manifold mixup: NC1 of $H$ (rounding level)", True),
             ("manifold_confidence_half", r"manifold mixup: confidence of $(\bar h_c + \bar h_{c'})/2$", False)]
            if has_man else [])
  fig, axs = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4.6), constrained_layout=True, squeeze=False)
  alpha = results.alpha.values
  notes = []
  for model in ("input", "manifold"):
    if f"{model}_converged" in results:
      note = _ok(results, model)[1]
      notes += [f"{model}: {note}"] if note else []
  for ax, (var, title, logy) in zip(axs[0], panels):
    ok = _ok(results, var.split("_")[0])[0]
    for i, K in enumerate(results.K.values):
      col, style = f"C{i}", _common.STYLES[i % len(_common.STYLES)]
      Y = np.where(ok[i], results[var].sel(K=K).values, np.nan)  # [alpha, seed]
      ax.plot(alpha, np.nanmean(Y, -1), color=col, ms=4, label=f"K={K}", ls=style["ls"], marker=style["marker"])
      if var == "input_confidence_half":
        T = np.where(ok[i], results["input_theory_confidence_half"].sel(K=K).values, np.nan)
        ax.plot(alpha, np.nanmean(T, -1), "x", color="k", ms=6, label="fixed-ETF theory at measured $\\rho$"
                if i == 0 else None)
    if var == "input_confidence_half":
      dev = np.abs(results[var].values - results["input_theory_confidence_half"].values)[ok]
      shown = f"{dev.max():.1e}" if dev.size else "n/a"
      title = f"{title}\nmax |measured - theory| = {shown} ({ok.sum()}/{ok.size} converged runs)"
    ax.set(xscale="log", xlabel=r"$\alpha$ (Beta($\alpha, \alpha$))", title=title)
    shown_vals = np.where(ok, results[var].values, np.nan)
    if logy and np.any(np.isfinite(shown_vals) & (shown_vals > 0)):  # no converged run: nothing to put on a log axis
      ax.set_yscale("log")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
  a = results.attrs
  fig.suptitle(f"float64 L-BFGS on the quadrature objectives (Q = {a['num_lam']} Gauss–Jacobi nodes), vmapped over "
               f"alpha x {results.sizes['seed']} seeds; $\\lambda_W$={a['lam_W']:g}, $\\lambda_H$={a['lam_H']:g} "
               f"(input), {a['lam_H_manifold']:g} (manifold), n={a['n']}; "
               + ("; ".join(notes) if notes else "every run converged"), fontsize=10)
  return fig
