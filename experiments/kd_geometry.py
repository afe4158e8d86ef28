r"""Learned classifier geometry for ``K > d + 1`` (d = 2 and d = 3) beside the reference geometries.

Spherical temperature-scaled CE-UFM (:mod:`ufm.spherical`; Jiang et al. 2024, "Generalized Neural
Collapse for a Large Number of Classes", arXiv 2310.05351, problem (3)), solved by Riemannian gradient
descent with momentum, ``num_seeds`` seeds and the temperatures ``taus`` vmapped per ``(d, K)``. Beside
each learned classifier: the softmax code (:func:`ufm.geometry.softmax_code`, the :math:`\tau \to 0`
limit Jiang et al. prove) and the minimal log-energy configuration (:func:`ufm.geometry.minimal_energy`,
the optimum of GNC2), each the best of ``num_restarts`` vmapped restarts.

Reported per ``(d, K, tau, seed)``: the minimal one-vs-rest distance :math:`\rho` of the learned
classifier and GNC2 of its rows, against :math:`\rho` and GNC2 of the two references. For ``d = 2``
every one of them is the regular ``K``-gon (derivations §5.7).
"""

import ml_collections
import numpy as np
import xarray as xr

import jax
import ufm
from experiments import _common, runner
from ufm import geometry, spherical

PAPER = "Jiang et al. 2024 (arXiv 2310.05351)"
FIGURE = "checks Jiang et al. 2024 (softmax codes as the temperature goes to 0; theorem number unverified)"
RUNTIME = "384 s wall (load ~10, 2 cores shared with other jobs; 115 s CPU)"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: d = 2 with K = 4, 5, 7, 9 and d = 3 with K = 5, 6, 8, 12; n = 1; tau = 0.5, 0.1; 4 seeds; 6000 steps.
  ``"smoke"``: d = 2, K = 4; 2 seeds; 20 steps; no polish of the softmax code."""
  c = ml_collections.ConfigDict()
  c.shapes = ((2, 4), (2, 5), (2, 7), (2, 9), (3, 5), (3, 6), (3, 8), (3, 12))
  c.n = 1
  c.taus = (0.5, 0.1)
  c.seed, c.num_seeds = 0, 4
  c.lr, c.momentum = 0.1, 0.9
  c.num_steps = 6000
  c.num_restarts, c.code_steps, c.energy_steps = 6, 2000, 2000
  c.polish_steps = 2000  # steepest-ascent polish of the softmax codes (ufm.geometry.softmax_code)
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.shapes, c.num_seeds, c.num_steps, c.taus = ((2, 4),), 2, 20, (0.5,)
    c.num_restarts, c.code_steps, c.energy_steps, c.polish_steps = 2, 10, 10, 0  # no polish: one program less
  return c


def sweep(c) -> dict:
  """The vmapped axes: temperature, then seeds ((d, K) change shapes: a Python loop)."""
  return {"tau": np.asarray(c.taus, np.float64), "seed": _common.seeds(c)}


def _check(c):
  shapes = tuple((int(d), int(K)) for d, K in c.shapes)
  if not shapes:
    raise ValueError("shapes is empty; allowed: a non-empty tuple of (d, K) pairs with d in {2, 3}, K >= 3")
  for d, K in shapes:
    if d not in (2, 3) or K < 3:
      raise ValueError(f"shapes contains (d, K) = ({d}, {K}); allowed: d in {{2, 3}} and K >= 3")
  _common.check_int("n", c.n)
  _common.check_int("num_steps", c.num_steps, hi=10**7)
  return shapes


def run(c, ctx) -> xr.Dataset:
  """Dims ``(shape, tau, seed)`` for the learned rho and GNC2, ``(shape, tau, seed, k, x)`` for the learned classifier
  (zero-padded to the largest K and to 3 coordinates), ``(shape, k, x)`` for the references."""
  shapes = _check(c)
  dt = _common.dtype(c)
  problems = [spherical.make_spherical_problem(ufm.balanced_counts(K, c.n), d=d, tau=c.taus[0], dtype=dt)
              for d, K in shapes]
  hp = _common.gd_hparams(c)
  Kmax = max(K for _, K in shapes)
  T, S = len(c.taus), int(c.num_seeds)
  out = {k: [] for k in ("rho", "gnc2", "W", "code_W", "code_rho", "code_spread", "energy_W", "energy_rho",
                         "energy_gnc2", "energy_spread", "code_gnc2", "diverged", "converged", "grad_norm",
                         "objective")}
  key = jax.random.key(int(c.seed))
  for (d, K), problem in zip(shapes, problems):
    res = ctx.sweep(f"kd_geometry[d={d},K={K}]", ufm.gradient_descent, problem, hp, axes=ctx.axes,
                    num_steps=c.num_steps, log_every=c.num_steps)
    W = np.asarray(res.solution.params.W)  # (tau, seed, K, d), unit rows
    code = geometry.softmax_code(jax.random.fold_in(key, 1000 * d + K), K, d, num_restarts=c.num_restarts,
                                 num_steps=c.code_steps, polish_steps=c.polish_steps, dtype=dt)
    energy = geometry.minimal_energy(jax.random.fold_in(key, 2000 * d + K), K, d, s=0.0,
                                     num_restarts=c.num_restarts, num_steps=c.energy_steps, dtype=dt)
    # rho and GNC2 of the learned classifiers and of the two references in one compiled call
    batch = np.concatenate([W.reshape(T * S, K, d), np.asarray(code.X).T[None], np.asarray(energy.X).T[None]])
    rho, g2 = (np.asarray(a) for a in _stats(batch))
    pad = np.zeros((T, S, Kmax, 3))
    pad[:, :, :K, :d] = W
    out["W"].append(pad)
    out["rho"].append(rho[:-2].reshape(T, S))
    out["gnc2"].append(g2[:-2].reshape(T, S))
    out["diverged"].append(np.asarray(res.solution.diverged))
    out["converged"].append(np.asarray(res.solution.converged))
    out["grad_norm"].append(np.asarray(res.solution.grad_norm))
    out["objective"].append(np.asarray(res.solution.objective))
    for i, (name, geo) in enumerate((("code", code), ("energy", energy))):
      P = np.zeros((Kmax, 3))
      P[:K, :d] = np.asarray(geo.X).T
      out[f"{name}_W"].append(P)
      out[f"{name}_spread"].append(float(geo.spread))
      out[f"{name}_rho"].append(float(rho[T * S + i]))
      out[f"{name}_gnc2"].append(float(g2[T * S + i]))
  dims = {"rho": ("shape", "tau", "seed"), "gnc2": ("shape", "tau", "seed"), "diverged": ("shape", "tau", "seed"),
          "converged": ("shape", "tau", "seed"), "grad_norm": ("shape", "tau", "seed"),
          "objective": ("shape", "tau", "seed"), "W": ("shape", "tau", "seed", "k", "x"),
          "code_W": ("shape", "k", "x"), "energy_W": ("shape", "k", "x")}
  data = {k: (dims.get(k, ("shape",)), np.asarray(v)) for k, v in out.items()}
  data["d"] = ("shape", np.asarray([d for d, _ in shapes]))
  data["K"] = ("shape", np.asarray([K for _, K in shapes]))
  ds = xr.Dataset(data, coords={"shape": [f"d={d},K={K}" for d, K in shapes], "tau": ctx.axes["tau"],
                                "seed": ctx.axes["seed"]})
  ds.attrs.update(n=c.n, num_steps=c.num_steps, num_restarts=c.num_restarts)
  return ds


@jax.jit
def _stats(W_bxKxd):
  """Minimal one-vs-rest distance and GNC2 (log energy over pairs of the unit rows) of a batch of classifiers."""
  one = lambda w: (geometry.one_vs_rest_distances(w.T).min(), ufm.metrics.gnc2(w.T))
  return jax.vmap(one)(W_bxKxd)


def _procrustes(W, C):
  """``W`` rotated (or reflected) onto ``C`` by an orthogonal Procrustes fit, the correspondence taken as the nearest
  points: tried from every pairing of ``W``'s first row with a row of ``C`` (with and without a reflection), two
  rounds of nearest-point matching then ``Q = U V^T`` from the SVD of ``W^T C_matched``; the fit of least residual."""
  best, out = np.inf, W
  d = W.shape[1]
  for flip in (1.0, -1.0):
    F = W * np.r_[flip, np.ones(d - 1)]
    for j in range(len(C)):
      Q = np.eye(d)
      if d == 2:  # the rotation taking F[0] to C[j]
        a = np.arctan2(C[j, 1], C[j, 0]) - np.arctan2(F[0, 1], F[0, 0])
        Q = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
      for _ in range(2):
        match = np.argmin(np.sum(((F @ Q)[:, None, :] - C[None, :, :]) ** 2, axis=-1), axis=1)
        U, _, Vt = np.linalg.svd(F.T @ C[match])
        Q = U @ Vt
      res = np.sum((F @ Q - C[match]) ** 2)
      if res < best:
        best, out = res, F @ Q
  return out


def summary(results: xr.Dataset, c) -> dict:
  """Per shape and temperature, over the converged seeds: rho and GNC2 of the learned classifiers against the
  softmax code and the minimal-energy configuration; the convergence counts and the largest gradient norm left."""
  out = {"n": int(results.attrs["n"]), "steps": int(results.attrs["num_steps"]), "seeds": int(results.sizes["seed"]),
         "restarts": int(results.attrs["num_restarts"]), "rows": []}
  for s in results.shape.values:
    r = results.sel(shape=s)
    for i, tau in enumerate(results.tau.values):
      ok, _ = runner.gate(r.converged.values[i], r.diverged.values[i])
      pick = lambda v, fn: float(fn(np.asarray(v)[ok])) if ok.any() else None
      out["rows"].append({"shape": str(s), "tau": float(tau), "converged": int(ok.sum()),
                          "grad_max": float(r.grad_norm.values[i].max()),
                          "rho_min": pick(r.rho.values[i], np.min), "rho_max": pick(r.rho.values[i], np.max),
                          "gnc2_min": pick(r.gnc2.values[i], np.min), "gnc2_max": pick(r.gnc2.values[i], np.max),
                          "code_rho": float(r.code_rho), "energy_rho": float(r.energy_rho),
                          "code_gnc2": float(r.code_gnc2), "energy_gnc2": float(r.energy_gnc2)})
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  f = lambda v: "n/a" if v is None else f"{v:.4f}"
  rows = summary["rows"]
  conv = sum(R["converged"] for R in rows)
  total = summary["seeds"] * len(rows)
  match = [R for R in rows if R["rho_min"] is not None and abs(R["rho_min"] - R["code_rho"]) <= 1e-3
           and abs(R["rho_max"] - R["code_rho"]) <= 1e-3]
  off = [R for R in rows if R["rho_min"] is not None and R not in match]
  unc = [R for R in rows if R["converged"] < summary["seeds"]]
  g_code = [R for R in rows if R["gnc2_min"] is not None and max(abs(R["gnc2_min"] - R["code_gnc2"]),
                                                                  abs(R["gnc2_max"] - R["code_gnc2"])) <= 1e-3]
  g_energy = [R for R in rows if R["gnc2_min"] is not None and max(abs(R["gnc2_min"] - R["energy_gnc2"]),
                                                                    abs(R["gnc2_max"] - R["energy_gnc2"])) <= 1e-3]
  txt = (f"{FIGURE}: spherical CE-UFM, n = {summary['n']}, {summary['steps']:,} Riemannian GD steps, "
         f"{summary['seeds']} seeds per (shape, τ); references: the softmax code and the minimal log-energy "
         f"configuration, best of {summary['restarts']} restarts each. {conv} of {total} runs converged; over those, "
         f"the learned classifier's ρ is within 1e-3 of the softmax code's at {len(match)} of "
         f"{len(match) + len(off)} (shape, τ)")
  if off:
    txt += " — not at " + "; ".join(f"{R['shape']}, τ = {R['tau']:g}: ρ {f(R['rho_min'])}–{f(R['rho_max'])}, GNC2 "
                                    f"{f(R['gnc2_min'])}–{f(R['gnc2_max'])} (code ρ {R['code_rho']:.4f}, GNC2 "
                                    f"{R['code_gnc2']:.4f}; min energy ρ {R['energy_rho']:.4f}, GNC2 "
                                    f"{R['energy_gnc2']:.4f})" for R in off)
  txt += (f". Their GNC2 is within 1e-3 of the softmax code's at {len(g_code)} and of the minimal energy's at "
          f"{len(g_energy)} of {len(match) + len(off)} (shape, τ)"
          + (" — where several configurations share the code's ρ, CE picks the more uniform one: "
             + ", ".join(f"{R['shape']}, τ = {R['tau']:g}" for R in g_energy if R not in g_code and R in match)
             if [R for R in g_energy if R not in g_code and R in match] else ""))
  if unc:
    txt += ". Not converged (left out): " + "; ".join(f"{R['shape']}, τ = {R['tau']:g}: {summary['seeds'] - R['converged']}"
                                                      f" of {summary['seeds']} (largest |∇f| {R['grad_max']:.0e})"
                                                      for R in unc)
  return txt + "."


def plot(results: xr.Dataset, c):
  """Top: the d = 2 classifiers (the first converged seed at the smallest tau that has one), fitted onto the softmax code by an orthogonal
  Procrustes fit, on the circle. Bottom: rho and GNC2 of the learned classifiers (converged seeds, per tau) against
  the softmax code and the minimal-energy configuration. Unconverged runs are left out and counted."""
  from matplotlib import pyplot as plt
  shapes = list(results.shape.values)
  two = [s for s in shapes if int(results.d.sel(shape=s)) == 2]
  ncol = max(len(two), 2)
  fig = plt.figure(figsize=(3.2 * ncol, 7.4), constrained_layout=True)
  gs = fig.add_gridspec(2, ncol)
  ti = int(np.argmin(results.tau.values))
  mask, note = runner.gate(results.converged.values, results.diverged.values)
  for j, s in enumerate(two):
    ax = fig.add_subplot(gs[0, j])
    r = results.sel(shape=s)
    K = int(r.K)
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.8", lw=1)
    C = r.code_W.values[:K, :2]
    ax.scatter(C[:, 0], C[:, 1], s=120, facecolors="none", edgecolors="C1", label="softmax code")
    order = np.argsort(results.tau.values)  # the smallest temperature with a converged seed
    done = [i for i in order if mask[shapes.index(s), i].any()]
    if done:
      i = done[0]
      seed = int(np.argmax(mask[shapes.index(s), i]))
      W = _procrustes(r.W.values[i, seed, :K, :2], C)
      ax.scatter(W[:, 0], W[:, 1], s=25, color="C0", label="learned (Procrustes-fitted)")
      ax.set_title(f"d=2, K={K}, tau={results.tau.values[i]:g}, seed {int(r.seed.values[seed])}: gap err "
                   f"{_gap_error(W):.1e}" + ("" if i == ti else f"\n(no converged seed at tau={results.tau.values[ti]:g})"),
                   fontsize=9)
    else:
      ax.set_title(f"d=2, K={K}: no converged seed", fontsize=9)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if j == 0:
      ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02))
  x = np.arange(len(shapes))
  for col, (var, ref, label) in enumerate((("rho", "rho", r"min one-vs-rest distance $\rho$"),
                                           ("gnc2", "gnc2", "GNC2 of the classifier rows"))):
    ax = fig.add_subplot(gs[1, col * ncol // 2:(col + 1) * ncol // 2])
    for i, tau in enumerate(results.tau.values):
      v = np.where(mask[:, i, :], results[var].values[:, i, :], np.nan)
      ax.scatter(np.repeat(x, v.shape[1]) + 0.08 * (i - 0.5), v.ravel(), s=12, color=f"C{i}",
                 label=f"learned, tau={tau:g}")
    ax.scatter(x, results[f"code_{ref}"].values, marker="_", s=300, color="k", label="softmax code (best restart)")
    ax.scatter(x, results[f"energy_{ref}"].values, marker="x", s=40, color="C3", label="min log-energy (best restart)")
    ax.set_xticks(x, shapes, rotation=45, fontsize=8)
    ax.set_title(label, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
  fig.suptitle(f"Spherical CE-UFM (n={results.attrs['n']}, {results.attrs['num_steps']} Riemannian GD steps, "
               f"{results.sizes['seed']} seeds) vs references ({results.attrs['num_restarts']} restarts each); "
               + (note or "every run converged"), fontsize=10)
  return fig


def _gap_error(W):
  ang = np.sort(np.mod(np.arctan2(W[:, 1], W[:, 0]), 2 * np.pi))
  gaps = np.diff(np.concatenate([ang, ang[:1] + 2 * np.pi]))
  return float(np.max(np.abs(gaps - 2 * np.pi / len(ang))))
