r"""NC1–NC4 along the training of a real MLP on the digits, CE and MSE, beside the UFM's limits.

An MLP (64 -> 128 -> 128 -> 128 -> 10, ReLU) trained on scikit-learn's digits (K = 10, 124 images per class, 50
per class held out) with SGD + momentum, a cosine learning rate and the plain network loss: the loss plus weight
decay on the parameters only (hidden layers ``weight_decay``, classifier :math:`\lambda_W`), no decay on the
features (``lam_H = 0``). The *feature-decay variant* (the UFM's explicit :math:`\frac{\lambda_H}{2}\|H\|_F^2`,
Zhu et al. 2021's ``--sep_decay``; see :mod:`ufm.networks`) of the settings ``feature_decay_settings`` is trained
beside them as separate settings labelled ``"<setting>, lam_H=<value>"``: that term builds part of the agreement with
the UFM in, so it is not the default, and the figure shows how much. ``num_seeds`` seeds vmapped per setting. The
metrics of :mod:`ufm.metrics` are measured on the penultimate features at log-spaced epochs, through 100% training
accuracy and into the terminal phase.

*Converged* (the gate, :data:`experiments._networks.PLATEAU_TOL`): 100% training accuracy at the last epoch and a
full-batch training objective that changed by at most 1% (relative) over the last 10% of the epochs; a non-finite
loss is *diverged*; any other run is *stopped*. Only converged seeds are drawn; the figure says how many were left
out. Under the cosine schedule the learning rate is small in those last epochs, so the plateau says that training
stopped moving, not that it reached a stationary point of the objective.

UFM limits (dashed): :func:`ufm.networks.compare_with_ufm` builds the UFM with the same ``K``, ``n_k`` and
:math:`\lambda_W`, and with the network's *effective* feature decay :math:`\lambda_H^{\mathrm{eff}} =
\lambda_W\|W\|_F^2/\|H\|_F^2` (the UFM's balance identity at the trained network; the trained ``lam_H`` in the
feature-decay variant), and takes its minimiser from :func:`ufm.theory.predict`: a simplex ETF with a bias (CE: Zhu
et al. 2021, Thm. 3.1; MSE: Zhou et al. 2022, Thm. 3.1) and an orthogonal frame for bias-free MSE (Tirer & Bruna
2022). Every NC metric's limit is 0 except, for the orthogonal frame, the ETF error of ``W`` and the self-duality
against the centred means (their non-zero limits are drawn), and :math:`\|W\|_F^2` (drawn).

Sources: Papyan, Han & Donoho 2020 (arXiv 2008.08186), Figs. 2–7 (the measurements); Zhu et al. 2021 (arXiv
2105.02375) and Zhou et al. 2022 (arXiv 2203.01238), the UFM as the model of those networks.
"""

import numpy as np
import xarray as xr

from experiments import _common
from experiments import _networks as N
from experiments import runner
from ufm import networks as nets

PAPER = "Papyan et al. 2020; Zhu et al. 2021; Zhou et al. 2022"
FIGURE = ("new (the NC1-NC4 measurements of Papyan et al. 2020 on an MLP on digits, beside the UFM's limits; paper: "
          "VGG/ResNet/DenseNet on 7 image data sets, NC2 drawn as equinorm and equiangularity separately, no UFM)")
RUNTIME = "230 s (measured: 231 s wall, 35 s of it compiling, load average 5-7 on the shared 2-core CPU)"

#: Metrics drawn in the figure (the smoke config measures only these).
PLOTTED = ("nc1", "etf_error_M", "etf_error_W", "of_error_W", "self_duality", "nc4", "norm_W_sq")


def get_config(arg: str | None = None):
  """Full: MLP 128 x 3 on digits, settings CE+bias, MSE+bias, MSE (no bias) with the plain loss (``lam_H = 0``), and
  the feature-decay variant (``lam_H_variant = 1e-4``) of CE+bias and MSE as separate, labelled settings; 4 seeds,
  600 epochs (about 4 minutes on the shared 2-core CPU). ``"smoke"``: one setting, 2 seeds, a 16-unit MLP, 64 images
  per class, 6 epochs."""
  c = N.base_config()
  c.num_seeds, c.num_epochs = 4, 600
  c.feature_decay_settings, c.lam_H_variant = ("ce+bias", "mse"), 1e-4
  # fast_compile: XLA -O0 (compiles several times faster; on this small MLP the slower execution costs less).
  c.fast_compile = True
  c.settings = ("ce+bias", "mse+bias", "mse")
  c.n = 124  # training images per class
  if _common.variant(arg) == "smoke":
    c.settings, c.num_seeds, c.width, c.depth, c.n = ("ce+bias",), 2, 16, 2, 64
    c.feature_decay_settings = ()
    c.num_epochs, c.num_points, c.metrics, c.layer_metrics, c.fast_compile = 6, 3, PLOTTED, ("nc1",), True
  return c



def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, seed, epoch[, layer])`` for the traces, ``(setting, seed)`` for the final comparison with the
  UFM (``cmp_*`` measured, ``pred_*`` predicted), ``(setting,)`` for the predicted geometry."""
  plain = N.check_settings(c.settings)
  variants = (_common.check_settings(c.feature_decay_settings, N.SETTINGS, key="feature_decay_settings")
              if len(c.feature_decay_settings) else ())
  lam_var = float(_common.positive("lam_H_variant", [c.lam_H_variant])[0]) if variants else 0.0
  runs = [(s, s, float(c.lam_H)) for s in plain] + [(f"{s}, lam_H={lam_var:g}", s, lam_var) for s in variants]
  n = _common.check_int("n", c.n, lo=2, hi=124)
  data = N.digits(c, (n,) * 10)
  cfgs = {s: N.train_config(c, N.SETTINGS[s][0]) for s in set(plain) | set(variants)}
  nets_ = {s: nets.mlp(64, 10, width=c.width, depth=c.depth, bias=N.SETTINGS[s][1]) for s in cfgs}
  keys = N.keys(c)
  per = []
  for label, s, lam_H in runs:
    loss, bias = N.SETTINGS[s]
    res = N.train(keys, data, N.hparams(c, lam_H=lam_H), net=nets_[s], config=cfgs[s],
                  label=f"net_nc_dynamics[{label}]", progress=ctx.progress)
    v = N.trace_vars(res.trace)
    v.update(N.convergence_vars(res, cfgs[s].epochs))
    v["train_lam_H"] = ((), np.asarray(lam_H))
    cmp = [nets.compare_with_ufm(f.W, f.hidden[-1], f.b if bias else None, data.counts, loss=loss, lam_W=c.lam_W,
                                 lam_H=lam_H or None, names=PLOTTED) for f in N.final_features(nets_[s], res, data.X)]
    for k in ("gram_W_distance", "gram_M_distance", "norm_W_sq", "norm_H_sq"):
      v[f"cmp_{k}"] = (("seed",), np.asarray([getattr(x, k) for x in cmp]))
    v["cmp_lam_H"] = (("seed",), np.asarray([x.lam_H for x in cmp]))
    for k in ("norm_W_sq", "norm_H_sq"):
      v[f"pred_{k}"] = (("seed",), np.asarray([getattr(x, f"pred_{k}") for x in cmp]))
    for k in PLOTTED:
      v[f"pred_{k}"] = ((), np.asarray(cmp[0].pred_metrics[k]))
    v["geometry"] = ((), np.asarray(cmp[0].geometry))
    per.append(v)
  ds = xr.Dataset({k: (("setting",) + per[0][k][0], np.stack([p[k][1] for p in per])) for k in per[0]},
                  coords={"setting": [r[0] for r in runs], "seed": ctx.axes["seed"], "epoch": list(N.epochs(c)),
                          "layer": np.arange(1, c.depth + 1)})
  ds.attrs.update(K=10, n=n, width=c.width, depth=c.depth, lam_W=c.lam_W, lam_H=c.lam_H,
                  weight_decay=c.weight_decay, lr=c.lr, num_epochs=c.num_epochs)
  return ds


_PANELS = (("err", "train / test (dotted) error; 0 drawn at 1e-4"), ("nc1", r"NC1  $\mathrm{tr}(\Sigma_W\Sigma_B^+)/K$"),
           ("etf_error_M", r"NC2: ETF error of centred means $\tilde M$"),
           ("etf_error_W", "NC2: ETF error of $W$ (OF error dashed-dot)"),
           ("self_duality", r"NC3: $\|W^\top/\|W\| - \tilde M/\|\tilde M\|\|$"),
           ("nc4", "NC4: 1 - agreement of classifier and NCC"), ("norm_W_sq", r"$\|W\|_F^2$"))


def _variant(a) -> str:
  return ("plain loss (weight decay on parameters only, no feature decay) unless a setting names its $\\lambda_H$"
          if not a["lam_H"] else f"explicit feature decay $\\lambda_H$={a['lam_H']:g} in every setting")


def summary(results: xr.Dataset, c) -> dict:
  """Per setting (converged seeds only): convergence counts, the epoch of 100% train accuracy, final test accuracy,
  NC1 at the start and the end, the final NC4 agreement, the Gram distance to the UFM's prediction, ||W||^2 measured
  over predicted, the effective lam_H, the final ETF / orthogonal-frame errors of W (mean and sd over seeds)."""
  out = {"K": int(results.attrs["K"]), "n": int(results.attrs["n"]), "width": int(results.attrs["width"]),
         "depth": int(results.attrs["depth"]), "lam_W": float(results.attrs["lam_W"]),
         "lam_H": float(results.attrs["lam_H"]), "weight_decay": float(results.attrs["weight_decay"]),
         "lr": float(results.attrs["lr"]), "num_epochs": int(results.attrs["num_epochs"]),
         "seeds": int(results.sizes["seed"]), "settings": {}}
  ep = results.epoch.values
  for s in results.setting.values:
    r = results.sel(setting=s)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    d = {"converged": int(ok.sum()), "geometry": str(r.geometry.item()), "train_lam_H": float(r.train_lam_H),
         "full_acc_epoch": N.first_epoch(ep, r.trace_train_acc.values)}
    if ok.any():
      g = r.isel(seed=np.flatnonzero(ok))
      d.update(test_acc_min=float(g.trace_test_acc.values[:, -1].min()),
               test_acc_max=float(g.trace_test_acc.values[:, -1].max()),
               nc1_start=N.mean_sd(g.trace_nc1.values[:, 0]), nc1_end=N.mean_sd(g.trace_nc1.values[:, -1]),
               nc4_end_min=float(g.trace_nc4.values[:, -1].min()),
               gram_W=N.mean_sd(g.cmp_gram_W_distance.values), gram_M=N.mean_sd(g.cmp_gram_M_distance.values),
               norm_W_ratio=N.mean_sd(g.cmp_norm_W_sq.values / g.pred_norm_W_sq.values),
               lam_H_eff=N.mean_sd(g.cmp_lam_H.values), etf_error_W=N.mean_sd(g.trace_etf_error_W.values[:, -1]),
               pred_etf_error_W=float(r.pred_etf_error_W))
      if "trace_of_error_W" in g:
        d["of_error_W"] = N.mean_sd(g.trace_of_error_W.values[:, -1])
    out["settings"][str(s)] = d
  return out


def _ms(x, f=".3f"):
  return f"{x[0]:{f}} ± {x[1]:{f}}"


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  S = summary
  variant = ("the plain loss (weight decay on the parameters only, no feature decay) unless a setting names its "
             "explicit feature decay λ_H (the feature-decay variant, compared with the UFM at that λ_H)"
             if not S["lam_H"] else f"an explicit feature decay λ_H = {S['lam_H']:g} on the features")
  parts = []
  for s, d in S["settings"].items():
    if not d["converged"]:
      parts.append(f"{s}: no seed converged")
      continue
    full = (f"100% train accuracy in every seed from epoch {d['full_acc_epoch']}" if d["full_acc_epoch"] is not None
            else "not every seed at 100% train accuracy")
    t = (f"{s}: {d['converged']}/{S['seeds']} seeds converged, {full} "
         f"(test {100 * d['test_acc_min']:.1f}–{100 * d['test_acc_max']:.1f}%), NC1 {d['nc1_start'][0]:.2f} → "
         f"{_ms(d['nc1_end'], '.2e')}, NC4 agreement ≥ {d['nc4_end_min']:.3f}; against the UFM's {d['geometry']} at "
         + (f"the trained λ_H = {d['train_lam_H']:g}" if d["train_lam_H"] else
            f"λ_H^eff = {_ms(d['lam_H_eff'], '.2e')}") + ": "
         f"Gram distance of WWᵀ {_ms(d['gram_W'])}, of the class means "
         f"{_ms(d['gram_M'])}, ‖W‖²_F measured/predicted {_ms(d['norm_W_ratio'])}")
    if "of_error_W" in d and d["geometry"] == "orthogonal frame":
      t += (f"; ETF error of W {_ms(d['etf_error_W'])} (the orthogonal frame's {d['pred_etf_error_W']:.3f}), "
            f"orthogonal-frame error {_ms(d['of_error_W'])}")
    parts.append(t)
  return (f"{FIGURE}: MLP 64 → {S['width']}×{S['depth']} → {S['K']} (ReLU) on the digits ({S['n']} training images "
          f"per class), SGD {S['lr']:g} + momentum, cosine schedule, {S['num_epochs']} epochs, {variant}: weight decay "
          f"{S['weight_decay']:g}, λ_W = {S['lam_W']:g}; {S['seeds']} seeds, mean ± sd over the converged ones "
          "(converged: 100% train accuracy and the objective within 1% over the last 10% of epochs). The UFM's "
          "feature decay is the network's effective one, λ_W‖W‖²/‖H‖² (balance identity), where none is trained. "
          + "; ".join(parts) + ".")


_STYLE = ({"ls": "-"}, {"ls": "--", "dashes": (5, 2)}, {"ls": "-."}, {"ls": "-", "marker": "s", "ms": 3},
          {"ls": "-.", "marker": "^", "ms": 3})


def plot(results: xr.Dataset, c):
  """Eight panels: error, NC1, NC2 (means, W), NC3, NC4, ||W||^2 against epoch (mean and min-max over the converged
  seeds, thin dashed the UFM's limit where non-zero), and a text panel with the final Gram distances to the UFM's
  prediction. Settings differ in colour and line style."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(2, 4, figsize=(17, 7.6), constrained_layout=True)
  axs = axs.ravel()
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  x = np.maximum(results.epoch.values, 0.5)  # epoch 0 (initialisation) drawn at 0.5 on the log axis
  lines, notes = [], []
  for i, s in enumerate(results.setting.values):
    r0 = results.sel(setting=s)
    ok, note = runner.gate(r0.converged.values, r0.diverged.values)
    notes.append(f"{s}: {int(ok.sum())}/{ok.size} seeds converged" + (f" ({note})" if note else ""))
    if not ok.any():
      continue
    r = r0.isel(seed=np.flatnonzero(ok))
    col, sty = colors[i % len(colors)], _STYLE[i % len(_STYLE)]
    for ax, (key, title) in zip(axs, _PANELS):
      if key == "err":
        _common.spread(ax, x, 1 - r.trace_train_acc.values, color=col, label=f"{s} (UFM: {r.geometry.item()})",
                       floor=1e-4, **sty)
        ax.plot(x, (1 - r.trace_test_acc.values).mean(0), color=col, ls=":", lw=1)
      elif key == "nc4":
        _common.spread(ax, x, 1 - r.trace_nc4.values, color=col, label=s, floor=1e-4, **sty)
      else:
        _common.spread(ax, x, r[f"trace_{key}"].values, color=col, label=s, floor=1e-6, **sty)
        target = float(r[f"pred_{key}"].values.mean()) if key == "norm_W_sq" else float(r[f"pred_{key}"])
        if np.isfinite(target) and target > 1e-9:
          ax.axhline(target, color=col, ls=(0, (2, 2)), lw=0.9)
        if key == "etf_error_W" and r.geometry.item() == "orthogonal frame" and "trace_of_error_W" in r:
          ax.plot(x, r.trace_of_error_W.values.mean(0), color=col, ls="-.", lw=1, marker=".", ms=4)
      ax.set_title(title, fontsize=9)
    g = r.cmp_gram_W_distance.values
    lines.append(f"{s:<22} {int(ok.sum())}/{ok.size}  {g.mean():.3f}±{g.std(ddof=1) if g.size > 1 else 0:.3f} "
                 f"{r.cmp_gram_M_distance.values.mean():6.3f} {r.cmp_norm_W_sq.values.mean():6.1f}/"
                 f"{r.pred_norm_W_sq.values.mean():.1f}")
  for ax, _ in zip(axs, _PANELS):
    ax.set(xscale="log", yscale="log", xlabel="epoch")
  axs[0].set_ylabel("error (1 - accuracy)")
  handles, labels = axs[0].get_legend_handles_labels()
  axs[-1].axis("off")
  axs[-1].legend(handles, labels, loc="upper left", fontsize=8, title="setting (UFM geometry)", frameon=False)
  head = f"{'at the last epoch':<22} conv  Gram WW^T   Gram M  |W|^2 net/UFM"
  left = [n for n in notes if "left out" in n]
  axs[-1].text(0.0, 0.5, "\n".join([head] + lines + [""] + left), fontsize=7, va="top", family="monospace",
               transform=axs[-1].transAxes)
  a = results.attrs
  fig.suptitle(f"MLP {a['width']}x{a['depth']} on digits (K={a['K']}, n={a['n']}), SGD lr {a['lr']:g} cosine, "
               f"{a['num_epochs']} epochs, {_variant(a)}: weight decay {a['weight_decay']:g}, $\\lambda_W$="
               f"{a['lam_W']:g}\nmean and min-max over the converged seeds (of {results.sizes['seed']}); thin dashed: "
               "the UFM's limit (where non-zero) at the network's effective $\\lambda_H = \\lambda_W\\|W\\|^2/\\|H\\|^2$ "
               "(at the trained $\\lambda_H$ where one is named)",
               fontsize=10)
  return fig
