r"""The landscape of the UFM objective in one feature, over its norm and its angle to its class's classifier.

Zhou et al. 2022's Fig. 2 fixes ``W`` at a simplex ETF and draws the objective as a function of one feature
:math:`h_{k,i}` alone, over :math:`s = \|h_{k,i}\|_2` and :math:`\theta = \arccos\langle h_{k,i}/\|h_{k,i}\|,
w_k/\|w_k\|\rangle`, one panel per loss. Here the whole UFM is first solved (float64 L-BFGS, its verdict against
the closed form of :func:`ufm.theory.predict`), which puts ``W`` at a simplex ETF (balanced classes, an
unregularised bias); then the full objective :func:`ufm.objective` is evaluated with every parameter at the
minimiser except the feature :math:`h_{0,0}` of class 0, set to
:math:`h = s(\cos\theta\, \hat w_0 + \sin\theta\, u)` with :math:`u` the unit vector of :math:`w_1` orthogonal to
:math:`w_0` (the plane of two classifiers), on an ``(s, theta)`` grid (one vmapped call). Plotted: the objective
above its minimum over the grid (log colour scale), the solved feature's :math:`(s^\star, 0)` and the grid's
minimiser; counted: the grid's local minima (a benign slice has one).

What it is: a reproduction of the figure's construction; Zhou et al. do not state their ``K``, ``d``,
:math:`\lambda`, ``W`` scale or grid ranges (their caption gives the axes only), so ours are our own choices. Their
Thm. 3.2 (every critical point of the MSE-UFM is a global minimiser or a strict saddle) is what the slice
illustrates; a 2-D slice cannot check it (see ``benign_landscape``).

Source: Zhou, Li, Ding, You, Qu, Zhu 2022, "On the optimization landscape of neural collapse under MSE loss"
(arXiv 2203.01238), Fig. 2 and Thm. 3.2; Zhu et al. 2021 (arXiv 2105.02375), Thm. 3.1 (CE minimiser).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import xarray as xr

import ufm
from experiments import _common, runner

PAPER = "Zhou et al. 2022 (arXiv 2203.01238); Zhu et al. 2021 (arXiv 2105.02375)"
FIGURE = ("reproduces Zhou et al. 2022 Fig. 2 (paper: W a simplex ETF, one feature's norm and angle, K, d, lambda "
          "and ranges not stated; ours: K = 4, d = 8, lambda = 5e-3, CE and MSE with a bias)")
RUNTIME = "27 s wall (load ~4; compile 19 s)"

_SETTINGS = ("ce+bias", "mse+bias")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Full: K = 4, n = 5, d = 8, lam_W = lam_H = 5e-3, CE and MSE with a bias, a 161 x 181 grid of s in
  [0, 2.5 s*] and theta in [0, pi]. ``"smoke"``: CE only, a 9 x 11 grid."""
  c = ml_collections.ConfigDict()
  c.settings = _SETTINGS
  c.K, c.n, c.d = 4, 5, 8
  c.lam_W, c.lam_H = 5e-3, 5e-3
  c.num_s, c.num_theta, c.s_max = 161, 181, 2.5  # s_max in units of the solved feature norm s*
  c.seed, c.init_scale, c.max_steps = 0, 0.1, 5000
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.settings, c.num_s, c.num_theta, c.max_steps = ("ce+bias",), 9, 11, 200
  return c


def sweep(c) -> dict:
  """The vmapped axes: ``s_ratio`` (the feature norm over the solved one) and ``theta``."""
  s = np.linspace(0.0, float(ufm.problem.check_real("s_max", c.s_max, lo=1.0, lo_open=True)),
                  _common.check_int("num_s", c.num_s, lo=3))
  return {"s_ratio": s, "theta": np.linspace(0.0, np.pi, _common.check_int("num_theta", c.num_theta, lo=3))}


def _local_minima(F: np.ndarray) -> int:
  """Grid points below all of their (up to 8) neighbours; theta = 0 and pi are edges, s = 0 an edge."""
  P = np.pad(F, 1, constant_values=np.inf)
  centre = P[1:-1, 1:-1]
  lower = np.ones_like(centre, bool)
  for di in (-1, 0, 1):
    for dj in (-1, 0, 1):
      if di or dj:
        lower &= centre < P[1 + di:P.shape[0] - 1 + di, 1 + dj:P.shape[1] - 1 + dj]
  return int(lower.sum())


def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, s_ratio, theta)`` for the landscape, ``(setting,)`` for the solve and the grid's minimiser."""
  settings = _common.check_settings(c.settings, allowed=_SETTINGS)
  _common.check_int("max_steps", c.max_steps, hi=10**6)
  problems = {s: ufm.make_problem(ufm.balanced_counts(c.K, c.n), d=c.d, lam_W=c.lam_W, lam_H=c.lam_H,
                                  loss=_common.SETTINGS[s][0], bias=True, dtype=_common.dtype(c)) for s in settings}
  hp = ufm.lbfgs_hparams(init_scale=c.init_scale, gtol=1e-12, dtype=_common.dtype(c))
  s_ratio, theta = (jnp.asarray(ctx.axes[k], _common.dtype(c)) for k in ("s_ratio", "theta"))
  rows = []
  for setting, problem in problems.items():
    res = ctx.sweep(f"feature_landscape[{setting}]", ufm.lbfgs_reference, problem, hp, axes={"seed": [c.seed]},
                    max_steps=c.max_steps)
    sol = jax.tree.map(lambda x: x[0], res.solution)
    P = sol.params
    i = int(np.flatnonzero(np.asarray(problem.labels) == 0)[0])  # the first feature of class 0
    w0, w1 = P.W[0], P.W[1]
    e0 = w0 / jnp.linalg.norm(w0)
    u = w1 - (w1 @ e0) * e0
    u = u / jnp.linalg.norm(u)
    s_star = jnp.linalg.norm(P.H[:, i])

    def f(s, t, P=P, problem=problem, e0=e0, u=u, s_star=s_star, i=i):
      h = s * s_star * (jnp.cos(t) * e0 + jnp.sin(t) * u)
      return ufm.objective(P._replace(H=P.H.at[:, i].set(h)), problem)

    F = jax.jit(jax.vmap(jax.vmap(f, (None, 0)), (0, None)))(s_ratio, theta)
    pred = ufm.theory.predict(problem)
    cos_star = float(P.H[:, i] @ e0 / s_star)
    rows.append(xr.Dataset({
        "objective_grid": (("s_ratio", "theta"), np.asarray(F)),
        "objective": float(sol.objective), "pred_objective": float(pred.objective),
        "converged": bool(sol.converged), "diverged": bool(sol.diverged), "grad_norm": float(sol.grad_norm),
        "s_star": float(s_star), "theta_star": float(np.arccos(np.clip(cos_star, -1.0, 1.0))),
        "etf_error_W": float(ufm.metrics.etf_error(P.W.T)),
        "local_minima": _local_minima(np.asarray(F)),
    }))
  ds = xr.concat(rows, dim=xr.DataArray(list(settings), dims="setting", name="setting"))
  ds = ds.assign_coords(s_ratio=np.asarray(s_ratio), theta=np.asarray(theta))
  ds.attrs.update(K=c.K, n=c.n, d=c.d, lam_W=c.lam_W, lam_H=c.lam_H)
  return ds


def summary(results: xr.Dataset, c) -> dict:
  """Per setting: the solve's verdict numbers, the grid minimiser against the solved feature, the local minima."""
  out = {"K": int(results.attrs["K"]), "n": int(results.attrs["n"]), "d": int(results.attrs["d"]),
         "lam_W": float(results.attrs["lam_W"]), "lam_H": float(results.attrs["lam_H"]),
         "grid": [int(results.sizes["s_ratio"]), int(results.sizes["theta"])], "settings": {}}
  ds_, dt_ = (float(np.diff(results[k].values[:2])[0]) for k in ("s_ratio", "theta"))
  for s in results.setting.values:
    r = results.sel(setting=s)
    F = r.objective_grid.values
    a, b = np.unravel_index(np.argmin(F), F.shape)
    out["settings"][str(s)] = {
        "converged": bool(r.converged), "gap": float(abs(r.objective - r.pred_objective) / abs(r.pred_objective)),
        "etf_error_W": float(r.etf_error_W), "s_star": float(r.s_star), "theta_star": float(r.theta_star),
        "s_ratio_min": float(r.s_ratio.values[a]), "theta_min": float(r.theta.values[b]),
        "local_minima": int(r.local_minima), "ds": ds_, "dtheta": dt_}
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  parts = []
  for s, S in summary["settings"].items():
    parts.append(f"{s}: the solve {'converged' if S['converged'] else 'did NOT converge'} to the closed-form "
                 f"objective within {S['gap']:.0e} (ETF error of W {S['etf_error_W']:.0e}); the grid's minimum lies at "
                 f"s/s* = {S['s_ratio_min']:.3f}, θ = {S['theta_min']:.3f} (grid steps {S['ds']:.3g}, "
                 f"{S['dtheta']:.3g}), the solved feature at s* = {S['s_star']:.4g}, θ* = {S['theta_star']:.0e}; "
                 f"{S['local_minima']} local minimum on the grid")
  return (f"{FIGURE}: K = {summary['K']}, n = {summary['n']}, d = {summary['d']}, λ_W = {summary['lam_W']:g}, "
          f"λ_H = {summary['lam_H']:g}, an unregularised bias, a {summary['grid'][0]} × {summary['grid'][1]} grid "
          "of (s, θ) with every other parameter at the float64 L-BFGS minimiser — " + "; ".join(parts) + ".")


def plot(results: xr.Dataset, c):
  """One panel per setting: log10 of the objective above the grid's minimum (over the slice's range) on (theta, s),
  contours every decade, the solved feature
  (white cross) and the grid's minimiser (circle). A setting whose solve did not converge is not drawn."""
  from matplotlib import pyplot as plt
  settings = list(results.setting.values)
  fig, axs = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4.6), squeeze=False, constrained_layout=True)
  notes = []
  for ax, s in zip(axs[0], settings):
    r = results.sel(setting=s)
    ok, note = runner.gate(np.atleast_1d(r.converged.values), np.atleast_1d(r.diverged.values))
    if not ok.all():
      notes.append(f"{s}: {note}")
      ax.set_title(f"{s}: not drawn (the solve did not converge)", fontsize=9)
      continue
    F = r.objective_grid.values
    rel = np.log10(np.maximum((F - F.min()) / (F.max() - F.min()), 1e-8))  # the slice's own range
    th, sr = np.degrees(r.theta.values), r.s_ratio.values * float(r.s_star)
    im = ax.pcolormesh(th, sr, rel, shading="nearest", cmap="viridis")
    ax.contour(th, sr, rel, levels=np.arange(-7, 0), colors="w", linewidths=0.5, alpha=0.6)
    fig.colorbar(im, ax=ax, label=r"$\log_{10}\,(f - f_{\min})/(f_{\max} - f_{\min})$ (floor $10^{-8}$)")
    a, b = np.unravel_index(np.argmin(F), F.shape)
    ax.plot(np.degrees(float(r.theta_star)), float(r.s_star), "wx", ms=10, mew=2, label=r"solved feature $(θ^\star, s^\star)$")
    ax.plot(th[b], sr[a], "o", mfc="none", mec="r", ms=10, mew=1.5, label="grid minimum")
    ax.set(xlabel=r"$\theta$ = angle to $w_k$ [deg]", ylabel=r"$s = \|h_{k,i}\|_2$")
    ax.set_title(f"{s}: {int(r.local_minima)} local minimum on the grid", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
  a = results.attrs
  fig.suptitle(f"UFM objective in one feature h (all else at the L-BFGS minimiser, W a simplex ETF): K={a['K']}, "
               f"n={a['n']}, d={a['d']}, $\\lambda_W$={a['lam_W']:g}, $\\lambda_H$={a['lam_H']:g}; h in the plane of "
               r"$w_k$ and $w_{k'}$" + ("; " + "; ".join(notes) if notes else ""), fontsize=10)
  return fig
