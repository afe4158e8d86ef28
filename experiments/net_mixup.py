r"""Mixup-trained vs plain MLPs on the digits: penultimate features of mixed examples on the plane of two
classifiers, beside the UFM's mixup prediction.

Two MLPs (64 -> 128^3, ReLU) with a **fixed simplex-ETF classifier** without bias (rows of norm ``rho``; the
classifier assumption of Fisher et al.'s mixup UFM) are trained with CE on the balanced digits, one with mixup
(per-example :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`; Zhang et al. 2018) and one without. After training,
for every ordered class pair :math:`c \ne c'` and :math:`\lambda` on a grid, ``m`` random pairs of training images are
mixed, :math:`x = \lambda x_i + (1-\lambda) x_j`, and their penultimate features projected on the plane of
:math:`w_c, w_{c'}`: :math:`x`-coordinate :math:`h\cdot(w_c - w_{c'})/\|w_c - w_{c'}\|` (across the decision
boundary), :math:`y`-coordinate :math:`h\cdot(w_c + w_{c'})/\|w_c + w_{c'}\|` (along it). The ETF's symmetry makes
these coordinates comparable across pairs, so all pairs are pooled.

UFM overlay (:func:`ufm.theory.mixup_optimal_feature`): the optimal mixed feature of the mixup UFM with the
same fixed ETF (``K``, ``rho``) and a per-example feature decay :math:`\mu` fitted to each network by the UFM's
stationarity condition :math:`\mu h = W^\top(y - p)` (least squares over the network's own training examples: mixed
ones with their mixed targets for the mixup net, clean ones for the plain net). Dashed: the mixup-UFM path; dotted:
the plain UFM's straight segment between the class features (``mixup=False``). The confidence (largest softmax
probability) against :math:`\lambda` is compared the same way. Both networks train with the plain network loss
(weight decay on the parameters only, no feature decay).

*Bulge* (the number the text quotes): :math:`y(\tfrac12)/\tfrac12(y(0) + y(1)) - 1`, the relative outward
(positive) or inward (negative) displacement of the mean mixed feature along the boundary at :math:`\lambda = \frac12`,
per seed, for the network and for the mixup UFM at that seed's fitted :math:`\mu`; reported as mean ± sd over seeds.
The light error bars of the figure are a different spread: that of single mixed examples over class and image pairs.

*Converged* (the gate, :data:`experiments._networks.PLATEAU_TOL`): 100% accuracy on the clean training images at the
last epoch and a full-batch objective on them that changed by at most 1% (relative) over the last 10% of the epochs
(for the mixup network a proxy: its training objective is on mixed examples); a non-finite loss is *diverged*; any
other run is *stopped*. Only converged seeds are drawn and summarised.

Sources: Fisher, Meng & Papyan 2024 ("Pushing boundaries: mixup's influence on neural collapse", arXiv 2402.06171,
ICLR 2024), Sec. 3 and the feature plots of their Sec. 4; derivations §2, §11 Part B.
"""

import jax
import numpy as np
import xarray as xr

from experiments import _common
from experiments import _networks as N
from experiments import runner
from ufm import networks as nets
from ufm import theory

PAPER = "Fisher, Meng & Papyan 2024"
FIGURE = "new (an MLP with a fixed simplex-ETF classifier trained with mixup, against the mixup UFM)"
RUNTIME = "60 s (measured: 57 s wall, 10 s of it compiling, load average 5-7 on the shared 2-core CPU)"

SETTINGS = ("mixup", "plain")


def get_config(arg: str | None = None):
  """Full: mixup (alpha 1) and plain, fixed ETF (rho 2), 4 seeds, 400 epochs, 21 lam values x 90 class pairs x 8
  image pairs. ``"smoke"``: 2 seeds, a 16 x 1 MLP, 3 epochs, 3 lam values x 2 image pairs."""
  c = N.base_config()
  c.settings = SETTINGS
  c.n = 124
  c.rho, c.mixup_alpha = 2.0, 1.0
  c.num_epochs = 400
  c.num_lams, c.pairs_per_class_pair = 21, 8
  # fast_compile: XLA -O0. At the default level this program's execution hung (all threads idle) in 2 of 3 runs
  # on the loaded 2-core CPU; -O0 ran every time (measured when the network experiments were added).
  c.fast_compile = True
  c.metrics, c.layer_metrics = ("nc1",), ("nc1",)  # the figure uses the final networks
  if _common.variant(arg) == "smoke":
    c.num_seeds, c.width, c.depth, c.n, c.num_lams, c.pairs_per_class_pair = 2, 16, 1, 32, 3, 2
    c.num_epochs, c.num_points, c.metrics, c.layer_metrics, c.fast_compile = 3, 2, ("nc1",), ("nc1",), True
  return c



def _mixed_inputs(c, data):
  """Mixed inputs for every (lam, c, c', image pair): ``X (L*P, D)``, the pair classes and weights."""
  K = data.K
  y = np.asarray(data.y)
  X = np.asarray(data.X, np.float64)
  lams = np.linspace(0.0, 1.0, c.num_lams)
  m = c.pairs_per_class_pair
  pairs = [(a, b) for a in range(K) for b in range(K) if a != b]
  u = np.asarray(jax.random.uniform(jax.random.key(c.data_seed + 1), (len(pairs), m, 2)))
  idx = np.empty((len(pairs), m, 2), int)
  for p, (a, b) in enumerate(pairs):
    ia, ib = np.flatnonzero(y == a), np.flatnonzero(y == b)
    idx[p, :, 0] = ia[(u[p, :, 0] * ia.size).astype(int)]
    idx[p, :, 1] = ib[(u[p, :, 1] * ib.size).astype(int)]
  Xa, Xb = X[idx[..., 0]], X[idx[..., 1]]  # (P, m, D)
  Xmix = lams[:, None, None, None] * Xa[None] + (1 - lams[:, None, None, None]) * Xb[None]  # (L, P, m, D)
  return lams, np.asarray(pairs), Xmix


def _project(h, W, pairs):
  """Plane coordinates of features ``h (L, P, m, d)`` for the class pairs ``pairs (P, 2)``."""
  wc, wc2 = W[pairs[:, 0]], W[pairs[:, 1]]  # (P, d)
  ex = (wc - wc2) / np.linalg.norm(wc - wc2, axis=1, keepdims=True)
  s = wc + wc2
  ey = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-300)
  return np.einsum("lpmd,pd->lpm", h, ex), np.einsum("lpmd,pd->lpm", h, ey)


def _fit_mu(h, logits, targets, W):
  r"""Least-squares :math:`\mu` of the stationarity condition :math:`\mu h = W^\top(y - p)` over samples (rows)."""
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  g = (targets - p) @ W  # rows: W^T (y - p)
  return float(np.sum(h * g) / np.sum(h * h))


def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, seed, lam)`` for the mean plane coordinates and confidence of mixed examples (``*_std``: the
  spread over class and image pairs), ``(setting, seed)`` for the fitted ``mu`` and accuracies, ``(setting, seed,
  lam)`` for the UFM prediction at each fitted ``mu`` (``pred_*``)."""
  settings = _common.check_settings(c.settings, SETTINGS)
  n = _common.check_int("n", c.n, lo=2, hi=124)
  _common.check_int("num_lams", c.num_lams, lo=2)
  _common.check_int("pairs_per_class_pair", c.pairs_per_class_pair, lo=1)
  data = N.digits(c, (n,) * 10)
  K = data.K
  keys = N.keys(c)
  lams, pairs, Xmix = _mixed_inputs(c, data)
  L, P, m, D = Xmix.shape
  T = np.eye(K)
  Ymix = np.broadcast_to(lams[:, None, None, None] * T[pairs[:, 0]][None, :, None, :] + (
      1 - lams[:, None, None, None]) * T[pairs[:, 1]][None, :, None, :], (L, P, m, K))  # mixed targets
  out = {}
  for s in settings:
    net = nets.mlp(64, K, width=c.width, depth=c.depth, bias=False, fixed_etf=True, etf_scale=c.rho)
    cfg = N.train_config(c, "ce", mixup=s == "mixup")
    hp = N.hparams(c, mixup_alpha=c.mixup_alpha)
    res = N.train(keys, data, hp, net=net, config=cfg, label=f"net_mixup[{s}]", progress=ctx.progress)
    rows = {k: [] for k in ("x", "y", "x_std", "y_std", "conf", "mu", "pred_x", "pred_y", "pred_conf",
                            "pred_plain_x", "pred_plain_y", "pred_plain_conf")}
    for i in range(len(keys)):
      state = jax.tree.map(lambda a, i=i: a[i], res.state)
      f = nets.features(net, state, Xmix.reshape(-1, D).astype(np.float32))
      W = np.asarray(f.W, np.float64)
      h = np.asarray(f.hidden[-1], np.float64).reshape(L, P, m, -1)
      logits = np.asarray(f.logits, np.float64).reshape(L, P, m, K)
      x, y = _project(h, W, pairs)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      rows["x"].append(x.mean((1, 2)))
      rows["y"].append(y.mean((1, 2)))
      rows["x_std"].append(x.std((1, 2)))
      rows["y_std"].append(y.std((1, 2)))
      rows["conf"].append(p.max(-1).mean((1, 2)))
      if s == "mixup":  # the network's own training distribution: mixed examples with mixed targets
        mu = _fit_mu(h.reshape(-1, h.shape[-1]), logits.reshape(-1, K), Ymix.reshape(-1, K), W)
      else:
        fc = nets.features(net, state, data.X)
        mu = _fit_mu(np.asarray(fc.hidden[-1], np.float64), np.asarray(fc.logits, np.float64),
                     T[np.asarray(data.y)], W)
      rows["mu"].append(mu)
      for tag, mix in (("pred", True), ("pred_plain", False)):
        if mu > 0:
          pf = theory.mixup_optimal_feature(lams, K, lam_H=mu, rho=c.rho, loss="ce", mixup=mix)
          pxyc = [np.asarray(a, np.float64) for a in (pf.x, pf.y, pf.confidence)]
        else:  # an untrained network (smoke) can fit mu <= 0: the UFM has no minimiser there; NaN, not a crash
          pxyc = [np.full(L, np.nan)] * 3
        for k, a in zip(("x", "y", "conf"), pxyc):
          rows[f"{tag}_{k}"].append(a)
    v = {k: (("seed", "lam") if np.ndim(r[0]) else ("seed",), np.asarray(r)) for k, r in rows.items()}
    v["train_acc"] = (("seed",), np.asarray(res.trace.train_acc[:, -1], np.float64))
    v["test_acc"] = (("seed",), np.asarray(res.trace.test_acc[:, -1], np.float64))
    v["nc1"] = (("seed",), np.asarray(res.trace.metrics["nc1"][:, -1], np.float64))
    v.update(N.convergence_vars(res, cfg.epochs))
    out[s] = v
  ds = xr.Dataset({k: (("setting",) + out[settings[0]][k][0], np.stack([out[s][k][1] for s in settings]))
                   for k in out[settings[0]]},
                  coords={"setting": list(settings), "seed": ctx.axes["seed"], "lam": lams})
  ds.attrs.update(K=K, n=n, width=c.width, depth=c.depth, rho=c.rho, mixup_alpha=c.mixup_alpha, lam_H=c.lam_H,
                  weight_decay=c.weight_decay, num_epochs=c.num_epochs, pairs=int(P * m))
  return ds


def _bulge(y, lam) -> np.ndarray:
  """``y(1/2) / mean(y(0), y(1)) - 1`` along the last axis (``lam`` ascending, holding 0, 1/2 and 1)."""
  y = np.asarray(y, np.float64)
  h = int(np.argmin(np.abs(lam - 0.5)))
  return y[..., h] / (0.5 * (y[..., 0] + y[..., -1])) - 1


def summary(results: xr.Dataset, c) -> dict:
  """Per setting (converged seeds only): the bulge of the network and of the mixup UFM at its fitted mu (mean, sd
  over seeds; how many seeds bulge outward), y at lam = 0, 1/2, 1, the spread of single mixed examples at 1/2, the
  fitted mu, the confidences at lam = 1/2 and at the ends, accuracies and NC1."""
  a = results.attrs
  lam = results.lam.values
  h = int(np.argmin(np.abs(lam - 0.5)))
  out = {"K": int(a["K"]), "width": int(a["width"]), "depth": int(a["depth"]), "rho": float(a["rho"]),
         "alpha": float(a["mixup_alpha"]), "num_epochs": int(a["num_epochs"]), "pairs": int(a["pairs"]),
         "seeds": int(results.sizes["seed"]), "lam_half": float(lam[h]), "settings": {}}
  for s in results.setting.values:
    r = results.sel(setting=s)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    d = {"converged": int(ok.sum())}
    if ok.any():
      g = r.isel(seed=np.flatnonzero(ok))
      b, pb = _bulge(g.y.values, lam), _bulge(g.pred_y.values, lam)
      d.update(bulge=N.mean_sd(b), bulge_out=int((b > 0).sum()), pred_bulge=N.mean_sd(pb),
               pred_plain_bulge=N.mean_sd(_bulge(g.pred_plain_y.values, lam)),
               y_half=N.mean_sd(g.y.values[:, h]), y_ends=N.mean_sd(0.5 * (g.y.values[:, 0] + g.y.values[:, -1])),
               y_half_pair_sd=float(g.y_std.values[:, h].mean()), mu=N.mean_sd(g.mu.values),
               conf_half=N.mean_sd(g.conf.values[:, h]), pred_conf_half=N.mean_sd(g.pred_conf.values[:, h]),
               pred_plain_conf_half=N.mean_sd(g.pred_plain_conf.values[:, h]),
               test_acc=N.mean_sd(g.test_acc.values), nc1=N.mean_sd(g.nc1.values))
    out["settings"][str(s)] = d
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``. No verdict beyond the numbers: the bulges are
  given with their seed spread and the sign count."""
  S = summary
  m = lambda x, f=".3f": f"{x[0]:{f}} ± {x[1]:{f}}"
  parts = []
  for s, d in S["settings"].items():
    if not d["converged"]:
      parts.append(f"{s}: no seed converged")
      continue
    parts.append(
        f"{s} network ({d['converged']}/{S['seeds']} seeds converged, test accuracy {100 * d['test_acc'][0]:.1f}%, "
        f"NC1 {d['nc1'][0]:.2g}): bulge {m(d['bulge'])} (outward in {d['bulge_out']} of {d['converged']} seeds; y "
        f"{m(d['y_ends'], '.2f')} at the ends, {m(d['y_half'], '.2f')} at λ = ½, where single mixed examples spread "
        f"by ± {d['y_half_pair_sd']:.2f}); the mixup UFM at its fitted μ = {m(d['mu'], '.3g')} bulges "
        f"{m(d['pred_bulge'])}, the plain UFM {m(d['pred_plain_bulge'])}; confidence at λ = ½ "
        f"{m(d['conf_half'])} (mixup UFM {m(d['pred_conf_half'])}, plain UFM {m(d['pred_plain_conf_half'])})")
  return (f"{FIGURE}: MLPs 64 → {S['width']}×{S['depth']} with a fixed simplex-ETF classifier (ρ = {S['rho']:g}, no "
          f"bias), CE, plain loss, {S['num_epochs']} epochs, {S['seeds']} seeds, mixup α = {S['alpha']:g} and plain; "
          f"{S['pairs']} mixed image pairs per λ. Bulge = y(½)/mean(y(0), y(1)) − 1 along the boundary direction, "
          "mean ± sd over the converged seeds (converged: 100% clean train accuracy and the objective within 1% "
          "over the last 10% of epochs). " + "; ".join(parts) + ". The network's bulge and the UFM's are given "
          "side by side; their sizes are compared by these numbers only.")


def plot(results: xr.Dataset, c):
  """Per setting: the mean path of mixed features on the (x, y) plane (colour = lam) with the UFM's mixup path
  (dashed) and straight plain path (dotted); then the confidence against lam, measured and predicted."""
  from matplotlib import pyplot as plt
  S = results.sizes["setting"]
  fig, axs = plt.subplots(1, S + 1, figsize=(5.8 * (S + 1), 5.4), constrained_layout=True, squeeze=False)
  axs = axs[0]
  lam = results.lam.values
  cmap = plt.get_cmap("coolwarm")
  cols = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  gated = {}
  for s in results.setting.values:
    r0 = results.sel(setting=s)
    ok, note = runner.gate(r0.converged.values, r0.diverged.values)
    gated[s] = (r0.isel(seed=np.flatnonzero(ok)), f"{int(ok.sum())}/{ok.size} seeds converged")
  for ax, s in zip(axs, results.setting.values):
    r, gate_txt = gated[s]
    if not r.sizes["seed"]:
      ax.set_title(f"{s}: {gate_txt}; nothing drawn")
      continue
    b, pb = _bulge(r.y.values, lam), _bulge(r.pred_y.values, lam)
    sd = lambda x: x.std(ddof=1) if x.size > 1 else 0.0
    for i in range(r.sizes["seed"]):
      ax.plot(r.x.values[i], r.y.values[i], color="0.6", lw=0.8, zorder=1)
      ax.scatter(r.x.values[i], r.y.values[i], c=lam, cmap=cmap, s=16, zorder=2)
    ax.errorbar(r.x.values.mean(0), r.y.values.mean(0), xerr=r.x_std.values.mean(0), yerr=r.y_std.values.mean(0),
                fmt="none", ecolor="0.8", lw=0.6, zorder=0, label="sd over single mixed examples")
    ax.plot(r.pred_x.values.mean(0), r.pred_y.values.mean(0), "k--", lw=1.5, label="UFM mixup (fitted $\\mu$)")
    ax.plot(r.pred_plain_x.values.mean(0), r.pred_plain_y.values.mean(0), "k:", lw=1.5, label="UFM plain")
    ax.axvline(0, color="0.5", lw=0.6)
    ax.set(xlabel=r"$h\cdot(w_c - w_{c'})/\|\cdot\|$ (across the boundary)",
           ylabel=r"$h\cdot(w_c + w_{c'})/\|\cdot\|$ (along it)",
           title=f"{s} ({gate_txt}):\nmean over {results.attrs['pairs']} mixed pairs per $\\lambda$, each seed\n"
                 f"bulge at $\\lambda$=1/2: network {b.mean():+.3f} ± {sd(b):.3f}, mixup UFM {pb.mean():+.3f} ± "
                 f"{sd(pb):.3f}\nfitted $\\mu$ {r.mu.values.mean():.3g}; test acc {r.test_acc.values.mean():.3f}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
  ax = axs[-1]
  for i, s in enumerate(results.setting.values):
    r = gated[s][0]
    if not r.sizes["seed"]:
      continue
    _common.spread(ax, lam, r.conf.values, color=cols[i], label=f"{s} network", logy=False)
    ax.plot(lam, r.pred_conf.values.mean(0), color=cols[i], ls="--", lw=1, label="UFM mixup at its $\\mu$")
    ax.plot(lam, r.pred_plain_conf.values.mean(0), color=cols[i], ls=":", lw=1, label="UFM plain at its $\\mu$")
  ax.set(xlabel=r"$\lambda$ (weight of class $c$)", ylabel="confidence (largest softmax probability)",
         title="confidence on mixed inputs")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
  sm = plt.cm.ScalarMappable(cmap=cmap)
  fig.colorbar(sm, ax=list(axs[:-1]), label=r"$\lambda$", shrink=0.8)
  a = results.attrs
  fig.suptitle(f"MLP {a['width']}x{a['depth']} with a fixed simplex-ETF classifier ($\\rho$={a['rho']:g}, no bias) "
               f"on digits, CE, plain loss (no feature decay), {a['num_epochs']} epochs, mixup $\\alpha$={a['mixup_alpha']:g}; UFM: "
               "ufm.theory.mixup_optimal_feature", fontsize=10)
  return fig
