r"""Imbalanced digits: classifier norms and angles against class size in trained MLPs, beside the UFM.

The MLP of :mod:`experiments.net_nc_dynamics` (the plain network loss: weight decay on the parameters only, no
feature decay) trained on imbalanced subsamples of the digits, several imbalance ratios: step profiles (5 majority
classes of ``n_major`` images, 5 minority classes of ``n_minor``; Fang et al. 2021), ``"step:n_minor"``, and
long-tailed ones (:math:`n_k = \lfloor n_{\max}\,\rho^{-k/9}\rfloor`; Cao et al. 2019), ``"long_tailed:rho"``; two
losses:

* **MSE without bias**: the UFM's minimiser is the *general orthogonal frame*: mutually orthogonal classifiers with
  :math:`\|w_k\|^2 = \sqrt{n_k\lambda_H/\lambda_W} - N\lambda_H` (zero below the threshold) (Dang et al. 2023,
  arXiv 2301.00437, at depth 1; :func:`ufm.theory.predict`);
* **CE with bias**: no closed form; the UFM's global minimiser from the convex reference
  :func:`ufm.convex.ce_convex`, whose minority classifiers shrink and align as :math:`n_A/n_B` grows (minority
  collapse, Fang et al. 2021, arXiv 2101.12699, Thm. 5).

Both with the network's ``K``, ``n_k``, :math:`\lambda_W` (the classifier's decay) and its *effective* feature decay
:math:`\lambda_H^{\mathrm{eff}} = \lambda_W\|W\|_F^2/\|H\|_F^2` (the UFM's balance identity at the trained network,
:func:`ufm.networks.compare_with_ufm`). Shown: :math:`\|w_k\|` and the class-mean norms against :math:`n_k`, and the
classifier cosines, measured (every converged seed) and predicted.

*Converged* (the gate, :data:`experiments._networks.PLATEAU_TOL`): 100% training accuracy at the last epoch (every
minority image fitted: the terminal phase) and a full-batch training objective that changed by at most 1%
(relative) over the last 10% of the epochs; a non-finite loss is *diverged*; any other run is *stopped*. Only
converged seeds are drawn and summarised; the figure says how many were left out.
"""

import numpy as np
import xarray as xr

import ufm
from experiments import _common
from experiments import _networks as N
from experiments import runner
from ufm import networks as nets

PAPER = "Fang et al. 2021; Dang et al. 2023; Thrampoulidis et al. 2022"
FIGURE = ("new (MLPs on imbalanced digits, three imbalance profiles, against the UFM minimiser; Fang et al. 2021 "
          "train VGG/ResNet)")
RUNTIME = "155 s (measured: 154 s wall, 30 s of it compiling, load average 5-7 on the shared 2-core CPU)"

PROFILES = ("step", "long_tailed")


def get_config(arg: str | None = None):
  """Full: settings CE+bias and MSE (no bias) x profiles step with n_minor 6 and 25 (ratios 20.7 and 5.0) and
  long-tailed (rho 40), plain loss, lam_W 5e-3, 3 seeds, 1000 epochs (about 2.5 minutes on the shared 2-core
  CPU). ``"smoke"``: MSE, step profile (n_major 20, n_minor 4), 2 seeds, 3 epochs."""
  c = N.base_config()
  c.settings = ("ce+bias", "mse")
  c.profiles = ("step:6", "step:25", "long_tailed:40")
  c.n_major = 124
  c.lam_W, c.lam_H, c.batch_size = 5e-3, 0.0, 64
  c.num_epochs = 1000
  # fast_compile: XLA -O0. At the default level this program's execution hung (all threads idle) in 2 of 3 runs
  # on the loaded 2-core CPU; -O0 ran every time (measured when the network experiments were added).
  c.fast_compile = True
  c.num_seeds = 3  # with 4 vmapped seeds this program's execution hung (all threads idle) in every run; 3 ran
  c.metrics, c.layer_metrics = ("nc1",), ("nc1",)  # the figure uses the final geometry (compare_with_ufm)
  if _common.variant(arg) == "smoke":
    c.settings, c.profiles, c.num_seeds, c.width, c.depth = ("mse",), ("step:4",), 2, 16, 1
    c.n_major, c.batch_size = 20, 24
    c.num_epochs, c.num_points, c.metrics, c.layer_metrics, c.fast_compile = 3, 2, ("nc1",), ("nc1",), True
  return c


def _profile(name: str) -> tuple[str, float]:
  """``"step:n_minor"`` or ``"long_tailed:rho"`` as (kind, value); ``ValueError`` naming ``profiles`` otherwise."""
  kind, _, val = str(name).partition(":")
  try:
    v = float(val)
  except ValueError:
    v = float("nan")
  if kind not in PROFILES or not np.isfinite(v) or v < 1 or (kind == "step" and v != int(v)):
    raise ValueError(f"profiles: {name!r}: allowed: 'step:n_minor' (an integer >= 1) or 'long_tailed:rho' "
                     "(a number >= 1)")
  return kind, v


def _counts(c, profile):
  kind, v = _profile(profile)
  if kind == "step":
    return ufm.step_counts(10, K_major=5, n_major=c.n_major, n_minor=int(v))
  return ufm.long_tailed_counts(10, n_max=c.n_major, rho=v)


def _cos(G):
  n = np.sqrt(np.maximum(np.diag(G), 0.0))
  return G / np.maximum(np.outer(n, n), 1e-300)


def run(c, ctx) -> xr.Dataset:
  """Dims ``(profile, setting, seed, class[, class2])`` for the measured ``norm_w``, ``norm_m``, ``cos_w``;
  ``(profile, setting, class[, class2])`` for the predicted ``pred_*``; ``(profile, class)`` for ``counts``."""
  settings = N.check_settings(c.settings)
  profiles = tuple(c.profiles)
  if not profiles or len(set(profiles)) != len(profiles):
    raise ValueError(f"profiles = {profiles!r}: allowed: a non-empty tuple of distinct profiles")
  _common.check_int("n_major", c.n_major, lo=2, hi=124)
  counts = {p: _counts(c, p) for p in profiles}  # validates before compiling
  keys = N.keys(c)
  out = {}
  for p in profiles:
    data = N.digits(c, counts[p])
    for s in settings:
      loss, bias = N.SETTINGS[s]
      cfg = N.train_config(c, loss)
      net = nets.mlp(64, 10, width=c.width, depth=c.depth, bias=bias)
      hp = N.hparams(c)
      res = N.train(keys, data, hp, net=net, config=cfg, label=f"net_imbalanced[{p},{s}]", progress=ctx.progress)
      cmp = [nets.compare_with_ufm(f.W, f.hidden[-1], f.b if bias else None, counts[p], loss=loss, lam_W=c.lam_W,
                                   lam_H=c.lam_H or None, names=("nc1",)) for f in N.final_features(net, res, data.X)]
      row = {
          "norm_w": (("seed", "class"), np.stack([x.norms_W for x in cmp])),
          "norm_m": (("seed", "class"), np.stack([np.sqrt(np.maximum(np.diag(x.gram_M), 0)) for x in cmp])),
          "cos_w": (("seed", "class", "class2"), np.stack([_cos(x.gram_W) for x in cmp])),
          "gram_W_distance": (("seed",), np.asarray([x.gram_W_distance for x in cmp])),
          "gram_M_distance": (("seed",), np.asarray([x.gram_M_distance for x in cmp])),
          "nc1": (("seed",), np.asarray([x.metrics["nc1"] for x in cmp])),
          "train_acc": (("seed",), np.asarray(res.trace.train_acc[:, -1], np.float64)),
          "trace_train_acc": (("seed", "epoch"), np.asarray(res.trace.train_acc, np.float64)),
          "lam_H_eff": (("seed",), np.asarray([x.lam_H for x in cmp])),
          **N.convergence_vars(res, cfg.epochs),
          "test_acc": (("seed",), np.asarray(res.trace.test_acc[:, -1], np.float64)),
          "pred_norm_w": (("class",), cmp[0].pred_norms_W),
          "pred_norm_m": (("class",), np.sqrt(np.maximum(np.diag(cmp[0].pred_gram_M), 0))),
          "pred_cos_w": (("class", "class2"), _cos(cmp[0].pred_gram_W)),
          "geometry": ((), np.asarray(cmp[0].geometry)),
      }
      for k, v in row.items():
        out.setdefault(k, {})[(p, s)] = v
  data_vars = {}
  for k, d in out.items():
    dims = d[(profiles[0], settings[0])][0]
    data_vars[k] = (("profile", "setting") + dims, np.stack([np.stack([d[(p, s)][1] for s in settings])
                                                             for p in profiles]))
  data_vars["counts"] = (("profile", "class"), np.asarray([counts[p] for p in profiles]))
  ds = xr.Dataset(data_vars, coords={"profile": list(profiles), "setting": list(settings), "seed": ctx.axes["seed"],
                                     "class": np.arange(10), "class2": np.arange(10),
                                     "epoch": list(N.epochs(c))})
  ds.attrs.update(width=c.width, depth=c.depth, lam_W=c.lam_W, lam_H=c.lam_H, weight_decay=c.weight_decay,
                  num_epochs=c.num_epochs, n_major=c.n_major)
  return ds


def _halves(n_k):
  """Head (the 5 largest classes) and tail (the 5 smallest) of a count profile, as index arrays."""
  order = np.argsort(-np.asarray(n_k), kind="stable")
  return order[:5], order[5:]


def summary(results: xr.Dataset, c) -> dict:
  """Per profile and setting (converged seeds only): convergence counts, the first measured epoch of 100% train
  accuracy in every seed, test accuracy, the head and tail classifier norms measured / predicted, the mean cosine
  of tail classifier pairs (measured and predicted), the Gram distance of WW^T (mean and sd over seeds)."""
  a = results.attrs
  out = {"width": int(a["width"]), "depth": int(a["depth"]), "lam_W": float(a["lam_W"]),
         "weight_decay": float(a["weight_decay"]), "num_epochs": int(a["num_epochs"]),
         "seeds": int(results.sizes["seed"]), "profiles": {}}
  ep = results.epoch.values
  for p in results.profile.values:
    n_k = results.counts.sel(profile=p).values
    head, tail = _halves(n_k)
    iu = [(i, j) for ii, i in enumerate(tail) for j in tail[ii + 1:]]
    P = {"counts": [int(x) for x in n_k], "ratio": float(n_k.max() / n_k.min()), "settings": {}}
    for s in results.setting.values:
      r = results.sel(profile=p, setting=s)
      ok, _ = runner.gate(r.converged.values, r.diverged.values)
      d = {"converged": int(ok.sum()), "geometry": str(r.geometry.item()),
           "full_acc_epoch": N.first_epoch(ep, r.trace_train_acc.values),
           "train_acc_min": float(r.train_acc.min())}
      if ok.any():
        g = r.isel(seed=np.flatnonzero(ok))
        w, pw = g.norm_w.values, g.pred_norm_w.values
        cos, pcos = g.cos_w.values, g.pred_cos_w.values
        d.update(test_acc=N.mean_sd(g.test_acc.values),
                 head_w=N.mean_sd(w[:, head].mean(1)), pred_head_w=float(pw[head].mean()),
                 tail_w=N.mean_sd(w[:, tail].mean(1)), pred_tail_w=float(pw[tail].mean()),
                 tail_cos=N.mean_sd(np.mean([cos[:, i, j] for i, j in iu], axis=0)),
                 pred_tail_cos=float(np.mean([pcos[i, j] for i, j in iu])),
                 gram_W=N.mean_sd(g.gram_W_distance.values))
      P["settings"][str(s)] = d
    out["profiles"][str(p)] = P
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  S = summary
  parts = []
  for p, P in S["profiles"].items():
    sub = []
    for s, d in P["settings"].items():
      reach = (f"100% train accuracy from epoch {d['full_acc_epoch']}" if d["full_acc_epoch"] is not None else
               f"never 100% train accuracy in every seed (lowest final {100 * d['train_acc_min']:.1f}%)")
      if not d["converged"]:
        sub.append(f"{s}: {reach}, no seed converged")
        continue
      m = lambda x: f"{x[0]:.3f} ± {x[1]:.3f}"
      sub.append(f"{s} ({d['converged']}/{S['seeds']} converged; {reach}; test {100 * d['test_acc'][0]:.1f}%): "
                 f"mean ‖w_k‖ head {m(d['head_w'])} (UFM {d['pred_head_w']:.3f}), tail {m(d['tail_w'])} (UFM "
                 f"{d['pred_tail_w']:.3f}), mean tail-pair cosine {m(d['tail_cos'])} (UFM {d['pred_tail_cos']:.3f}), "
                 f"Gram distance of WWᵀ {m(d['gram_W'])}")
    parts.append(f"*{p}* (n_k = {', '.join(str(x) for x in P['counts'])}; ratio {P['ratio']:.1f}): " + "; ".join(sub))
  cases = [d for P in S["profiles"].values() for d in P["settings"].values() if d["converged"]]
  larger = sum(d["tail_w"][0] > d["pred_tail_w"] for d in cases)
  parts.append(f"In {larger} of {len(cases)} profile × loss cases the network's mean tail classifier norm is above "
               "the UFM's")
  return (f"{FIGURE}: MLP 64 → {S['width']}×{S['depth']} → 10, plain loss (weight decay {S['weight_decay']:g}, "
          f"λ_W = {S['lam_W']:g}, no feature decay), {S['num_epochs']} epochs, {S['seeds']} seeds; the UFM "
          "(same K, n_k, λ_W, the network's effective λ_H = λ_W‖W‖²/‖H‖²) by `ufm.theory.predict` (bias-free MSE: "
          "general orthogonal frame) or `ufm.convex.ce_convex` (CE + bias). Head/tail: the 5 largest / 5 smallest "
          "classes; mean ± sd over the converged seeds (converged: 100% train accuracy and the objective within 1% "
          "over the last 10% of epochs). " + " ".join(x + "." for x in parts))


_MARK = ("o", "s", "^", "D")


def plot(results: xr.Dataset, c):
  """Rows = profiles; columns: ||w_k|| vs n_k, class-mean norm vs n_k, classifier cosines (measured vs predicted).
  Network points are every converged seed (small markers, one marker shape per setting); the UFM's values are the
  dashed lines with crosses. One legend, below the panels."""
  from matplotlib import pyplot as plt
  from matplotlib.lines import Line2D
  P = results.sizes["profile"]
  fig, axs = plt.subplots(P, 3, figsize=(15, 4.1 * P + 0.8), constrained_layout=True, squeeze=False)
  cols = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  handles = []
  for ri, (row, p) in enumerate(zip(axs, results.profile.values)):
    n_k = results.counts.sel(profile=p).values
    gates, cos_lo = [], -0.5
    for i, s in enumerate(results.setting.values):
      r0 = results.sel(profile=p, setting=s)
      ok, note = runner.gate(r0.converged.values, r0.diverged.values)
      gates.append(f"{s} {int(ok.sum())}/{ok.size}")
      col, mk = cols[i % len(cols)], _MARK[i % len(_MARK)]
      if ri == 0:
        handles += [Line2D([], [], color=col, marker=mk, ls="none", alpha=0.7, label=f"{s}: network (each converged seed)"),
                    Line2D([], [], color=col, marker="x", ls="--", label=f"{s}: UFM ({r0.geometry.item()})")]
      order = np.argsort(n_k)
      for ax, var in ((row[0], "norm_w"), (row[1], "norm_m")):
        ax.plot(n_k[order], r0[f"pred_{var}"].values[order], color=col, ls="--", marker="x", zorder=1)
      if not ok.any():
        continue
      r = r0.isel(seed=np.flatnonzero(ok))
      for ax, var in ((row[0], "norm_w"), (row[1], "norm_m")):
        meas = r[var].values  # (seed, class)
        jitter = 1 + 0.03 * (np.arange(meas.shape[0]) - (meas.shape[0] - 1) / 2)
        for j in range(meas.shape[0]):
          ax.scatter(n_k * jitter[j], meas[j], s=16, color=col, marker=mk, alpha=0.6, zorder=2)
      C = r.cos_w.values
      iu = np.triu_indices(10, 1)
      pred = r.pred_cos_w.values[iu]
      meas = C[:, iu[0], iu[1]]
      row[2].scatter(np.broadcast_to(pred, meas.shape), meas, s=12, color=col, marker=mk, alpha=0.5, zorder=2)
      cos_lo = min(cos_lo, float(meas.min()) - 0.05, float(pred.min()) - 0.05)
    conv = "converged seeds: " + ", ".join(gates)
    row[0].set(xscale="log", xlabel="$n_k$ (training images of class k)", ylabel=r"$\|w_k\|$")
    row[0].set_title(f"{p}: classifier norms\nn_k = {', '.join(str(int(x)) for x in n_k)}", fontsize=9)
    row[1].set(xscale="log", xlabel="$n_k$", ylabel=r"$\|\bar h_k\|$ (centred with a bias)")
    row[1].set_title(f"{p}: class-mean feature norms\n({conv})", fontsize=9)
    ticks = np.unique(n_k)
    for ax in row[:2]:
      ax.set_xticks(ticks, [str(int(t)) for t in ticks], fontsize=7)
      ax.minorticks_off()
    lim = [cos_lo, 1.05]
    row[2].plot(lim, lim, color="k", lw=0.8, zorder=0)
    row[2].set(xlim=lim, ylim=lim, xlabel=r"UFM $\cos(w_k, w_{k'})$", ylabel=r"network $\cos(w_k, w_{k'})$")
    row[2].set_title(f"{p}: classifier cosines,\nevery pair and converged seed", fontsize=9)
  fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
  a = results.attrs
  fig.suptitle(f"MLP {a['width']}x{a['depth']} on imbalanced digits, {a['num_epochs']} epochs, plain loss (weight "
               f"decay {a['weight_decay']:g}, $\\lambda_W$={a['lam_W']:g}, feature decay $\\lambda_H$={a['lam_H']:g}); "
               "UFM with the same K, $n_k$, $\\lambda_W$ and the network's effective "
               "$\\lambda_H=\\lambda_W\\|W\\|^2/\\|H\\|^2$ (dashed)", fontsize=10)
  return fig
