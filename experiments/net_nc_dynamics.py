r"""NC1–NC4 along the training of a real MLP on the digits, CE and MSE, beside the UFM's limits.

An MLP (64 -> 128 -> 128 -> 128 -> 10, ReLU) trained on scikit-learn's digits (K = 10, 124 images per class, 50
per class held out) with SGD + momentum, a cosine learning rate, weight decay on every layer and the UFM's explicit
feature decay :math:`\lambda_H` (Zhu et al. 2021's ``--sep_decay``; see :mod:`ufm.networks` for the objective),
``num_seeds`` seeds vmapped per setting. The metrics of :mod:`ufm.metrics` are measured on the penultimate features
at log-spaced epochs, through 100% training accuracy and far into the terminal phase.

UFM limits (dashed): :func:`ufm.networks.compare_with_ufm` builds the UFM with the same ``K``, ``n_k``,
:math:`\lambda_W` and :math:`\lambda_H` and takes its minimiser from :func:`ufm.theory.predict`: a simplex ETF
with a bias (CE: Zhu et al. 2021, Thm. 3.1; MSE: Zhou et al. 2022, Thm. 3.1) and an orthogonal frame for bias-free
MSE (Tirer & Bruna 2022). Every NC metric's limit is 0 except, for the orthogonal frame, the ETF error of ``W`` and
the self-duality against the centred means (their non-zero limits are drawn), and :math:`\|W\|_F^2` (drawn).

Sources: Papyan, Han & Donoho 2020 (arXiv 2008.08186), Figs. 2–7 (the measurements); Zhu et al. 2021 (arXiv
2105.02375) and Zhou et al. 2022 (arXiv 2203.01238), the UFM as the model of those networks.
"""

import numpy as np
import xarray as xr

from experiments import _common
from experiments import _networks as N
from ufm import networks as nets

PAPER = "Papyan et al. 2020; Zhu et al. 2021; Zhou et al. 2022"
FIGURE = ("reproduces Papyan et al. 2020 Figs. 2-7 in kind (paper: VGG/ResNet/DenseNet on 7 image data sets; "
          "ours: an MLP on digits)")
RUNTIME = "390 s (measured under load)"

#: Metrics drawn in the figure (the smoke config measures only these).
PLOTTED = ("nc1", "etf_error_M", "etf_error_W", "of_error_W", "self_duality", "nc4", "norm_W_sq")


def get_config(arg: str | None = None):
  """Full: MLP 128 x 3 on digits, settings CE+bias, MSE+bias, MSE (no bias), 4 seeds, 600 epochs. ``"smoke"``: one
  setting, 2 seeds, a 16-unit MLP, 64 images per class, 6 epochs."""
  c = N.base_config()
  c.settings = ("ce+bias", "mse+bias", "mse")
  c.n = 124  # training images per class
  if _common.variant(arg) == "smoke":
    c.settings, c.num_seeds, c.width, c.depth, c.n = ("ce+bias",), 2, 16, 2, 64
    c.num_epochs, c.num_points, c.metrics, c.layer_metrics, c.fast_compile = 6, 3, PLOTTED, ("nc1",), True
  return c



def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, seed, epoch[, layer])`` for the traces, ``(setting, seed)`` for the final comparison with the
  UFM (``cmp_*`` measured, ``pred_*`` predicted), ``(setting,)`` for the predicted geometry."""
  settings = N.check_settings(c.settings)
  n = _common.check_int("n", c.n, lo=2, hi=124)
  data = N.digits(c, (n,) * 10)
  hp = N.hparams(c)
  cfgs = {s: N.train_config(c, N.SETTINGS[s][0]) for s in settings}
  nets_ = {s: nets.mlp(64, 10, width=c.width, depth=c.depth, bias=N.SETTINGS[s][1]) for s in settings}
  keys = N.keys(c)
  per = []
  for s in settings:
    loss, bias = N.SETTINGS[s]
    res = nets.train(keys, data, hp, net=nets_[s], config=cfgs[s], progress=f"net_nc_dynamics[{s}]" if ctx.progress
                     else False)
    v = N.trace_vars(res.trace)
    v["diverged"] = (("seed",), np.asarray(res.diverged))
    cmp = [nets.compare_with_ufm(f.W, f.hidden[-1], f.b if bias else None, data.counts, loss=loss, lam_W=c.lam_W,
                                 lam_H=c.lam_H or None, names=PLOTTED) for f in N.final_features(nets_[s], res, data.X)]
    for k in ("gram_W_distance", "gram_M_distance", "norm_W_sq", "norm_H_sq"):
      v[f"cmp_{k}"] = (("seed",), np.asarray([getattr(x, k) for x in cmp]))
    for k in ("norm_W_sq", "norm_H_sq"):
      v[f"pred_{k}"] = (("seed",), np.asarray([getattr(x, f"pred_{k}") for x in cmp]))
    for k in PLOTTED:
      v[f"pred_{k}"] = ((), np.asarray(cmp[0].pred_metrics[k]))
    v["geometry"] = ((), np.asarray(cmp[0].geometry))
    per.append(v)
  ds = xr.Dataset({k: (("setting",) + per[0][k][0], np.stack([p[k][1] for p in per])) for k in per[0]},
                  coords={"setting": list(settings), "seed": ctx.axes["seed"], "epoch": list(cfgs[settings[0]].epochs),
                          "layer": np.arange(1, c.depth + 1)})
  ds.attrs.update(K=10, n=n, width=c.width, depth=c.depth, lam_W=c.lam_W, lam_H=c.lam_H,
                  weight_decay=c.weight_decay, lr=c.lr, num_epochs=c.num_epochs)
  return ds


_PANELS = (("err", "train (solid) / test (dotted) error"), ("nc1", r"NC1  $\mathrm{tr}(\Sigma_W\Sigma_B^+)/K$"),
           ("etf_error_M", r"NC2: ETF error of centred means $\tilde M$"),
           ("etf_error_W", "NC2: ETF error of $W$ (OF error dashed-dot)"),
           ("self_duality", r"NC3: $\|W^\top/\|W\| - \tilde M/\|\tilde M\|\|$"),
           ("nc4", "NC4: 1 - agreement of classifier and NCC"), ("norm_W_sq", r"$\|W\|_F^2$"))


def plot(results: xr.Dataset, c):
  """Eight panels: error, NC1, NC2 (means, W), NC3, NC4, ||W||^2 against epoch (mean and min-max over seeds, dashed
  the UFM's limit), and a text panel with the final Gram distances to the UFM's prediction."""
  from matplotlib import pyplot as plt
  fig, axs = plt.subplots(2, 4, figsize=(16, 7), constrained_layout=True)
  axs = axs.ravel()
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  x = np.maximum(results.epoch.values, 0.5)  # epoch 0 (initialisation) drawn at 0.5 on the log axis
  lines = []
  for i, s in enumerate(results.setting.values):
    r = results.sel(setting=s)
    col = colors[i % len(colors)]
    for ax, (key, title) in zip(axs, _PANELS):
      if key == "err":
        _common.spread(ax, x, 1 - r.trace_train_acc.values, color=col, label=f"{s} ({r.geometry.item()})",
                       floor=1e-4)
        ax.plot(x, (1 - r.trace_test_acc.values).mean(0), color=col, ls=":")
      elif key == "nc4":
        _common.spread(ax, x, 1 - r.trace_nc4.values, color=col, label=s, floor=1e-4)
      else:
        _common.spread(ax, x, r[f"trace_{key}"].values, color=col, label=s, floor=1e-6)
        target = float(r[f"pred_{key}"].values.mean()) if key == "norm_W_sq" else float(r[f"pred_{key}"])
        if np.isfinite(target) and target > 1e-9:
          ax.axhline(target, color=col, ls="--", lw=1)
        if key == "etf_error_W" and r.setting.item() == "mse" and "trace_of_error_W" in r:
          ax.plot(x, r.trace_of_error_W.values.mean(0), color=col, ls="-.", lw=1)
      ax.set_title(title, fontsize=9)
    g = r.cmp_gram_W_distance.values
    lines.append(f"{s}: UFM {r.geometry.item()}\n  |WW^T - pred|_F (normalised) = {g.mean():.3f} "
                 f"[{g.min():.3f}, {g.max():.3f}]\n  class-mean Gram: {r.cmp_gram_M_distance.values.mean():.3f}\n"
                 f"  |W|^2: {r.cmp_norm_W_sq.values.mean():.1f} measured, {r.pred_norm_W_sq.values.mean():.1f} UFM")
  for ax, _ in zip(axs, _PANELS):
    ax.set(xscale="log", yscale="log", xlabel="epoch")
  handles, labels = axs[0].get_legend_handles_labels()
  axs[-1].axis("off")
  axs[-1].legend(handles, labels, loc="upper center", fontsize=8, title="setting (UFM geometry)")
  axs[-1].text(0.0, 0.62, "\n".join(lines), fontsize=7.5, va="top", family="monospace", transform=axs[-1].transAxes)
  a = results.attrs
  fig.suptitle(f"MLP {a['width']}x{a['depth']} on digits (K=10, n={a['n']}), SGD lr {a['lr']:g} cosine, weight decay "
               f"{a['weight_decay']:g}, $\\lambda_W$={a['lam_W']:g}, $\\lambda_H$={a['lam_H']:g}: mean and min-max "
               f"over {results.sizes['seed']} seeds; dashed: the UFM's limit (where non-zero)", fontsize=10)
  return fig
