r"""Layer-wise NC1: within-class variability through the hidden layers of an MLP trained on the digits.

A deeper MLP (64 -> 128^6 -> 10, ReLU) on scikit-learn's digits, CE and MSE (with bias), the training of
:mod:`experiments.net_nc_dynamics` (the plain network loss: weight decay on the parameters only, no feature decay).
Every feature metric of :data:`ufm.networks.LAYER_METRICS` is measured on every hidden layer at log-spaced epochs; layer 0 is the input (the centred pixels). Shown: NC1
:math:`\mathrm{tr}(\Sigma_W\Sigma_B^+)/K` against depth at several epochs, the trace ratio
:math:`\mathrm{tr}\,\Sigma_W/\mathrm{tr}\,\Sigma_B` (Tirer et al.'s NC1) and the CDNV against depth at the end of
training, and each layer's NC1 against epoch. The least-squares slope of :math:`\log_{10}\mathrm{NC1}` over the
hidden layers is the per-layer decay rate that He & Su (2022)'s law of data separation says is constant (a
straight line on this plot: geometric decay).

*Converged* (the gate, :data:`experiments._networks.PLATEAU_TOL`): 100% training accuracy at the last epoch and a
full-batch training objective that changed by at most 1% (relative) over the last 10% of the epochs; a non-finite
loss is *diverged*; any other run is *stopped*. Only converged seeds are drawn; the figure says how many were left
out.

Sources: Tirer, Huang & Niles-Weed 2023 (arXiv 2210.16658) and Dang et al. 2023 (arXiv 2301.00437), the depthwise
decrease of within-class variability in trained networks and deep UFMs; He & Su 2022 ("A law of data separation in
deep learning", arXiv 2210.17020), geometric decay of :math:`\mathrm{tr}(SS_W SS_B^+)` with depth; Papyan 2020
("Traces of class/cross-class structure", arXiv 2008.11865) for NC1 through layers.
"""

import numpy as np
import xarray as xr

from experiments import _common
from experiments import _networks as N
from experiments import runner
from ufm import networks as nets

PAPER = "Tirer et al. 2023; Dang et al. 2023; He & Su 2022"
FIGURE = "new (closest: Tirer et al. 2023 Fig. 2, layer-wise training on CIFAR-10; ours trains end to end on digits)"
RUNTIME = "150 s (measured: 152 s wall, 11 s of it compiling, load average 5-7 on the shared 2-core CPU)"

LAYER = ("nc1", "nc1_ratio", "cdnv", "etf_error_M")


def get_config(arg: str | None = None):
  """Full: MLP 128 x 6 on digits, CE+bias and MSE+bias, plain loss, 4 seeds, 600 epochs. ``"smoke"``: CE+bias, 2 seeds, a
  16 x 3 MLP, 3 epochs."""
  c = N.base_config()
  c.depth = 6
  # fast_compile: XLA -O0 (compiles several times faster; on this small MLP the slower execution costs less).
  c.fast_compile = True
  c.settings = ("ce+bias", "mse+bias")
  c.n = 124
  c.metrics, c.layer_metrics = ("nc1", "nc4"), LAYER  # what the figure shows (all metrics: net_nc_dynamics)
  if _common.variant(arg) == "smoke":
    c.settings, c.num_seeds, c.width, c.depth, c.n = ("ce+bias",), 2, 16, 3, 64
    c.num_epochs, c.num_points, c.metrics, c.layer_metrics, c.fast_compile = 3, 2, ("nc1",), LAYER, True
  return c



def run(c, ctx) -> xr.Dataset:
  """Dims ``(setting, seed, epoch, layer)`` for the layer metrics (``layer`` 0 = the input, constant in epoch),
  ``(setting, seed, epoch)`` for the accuracies; ``(setting, seed)`` the fitted per-layer decay of log10 NC1."""
  settings = N.check_settings(c.settings)
  n = _common.check_int("n", c.n, lo=2, hi=124)
  data = N.digits(c, (n,) * 10)
  hp = N.hparams(c)
  keys = N.keys(c)
  inp = nets.measure(data.X, data.y, names=tuple(c.layer_metrics) or None)  # layer 0: the inputs
  per = []
  for s in settings:
    loss, bias = N.SETTINGS[s]
    cfg = N.train_config(c, loss)
    net = nets.mlp(64, 10, width=c.width, depth=c.depth, bias=bias)
    res = N.train(keys, data, hp, net=net, config=cfg, label=f"net_layerwise_nc1[{s}]", progress=ctx.progress)
    v = N.trace_vars(res.trace)
    v.update(N.convergence_vars(res, cfg.epochs))
    for k in list(v):
      if k.startswith("layer_"):
        dims, a = v[k]
        const = np.broadcast_to(np.float64(inp[k[len("layer_"):]]), a.shape[:-1] + (1,))
        v[k] = (dims, np.concatenate([const, a], axis=-1))
    log_nc1 = np.log10(np.asarray(res.trace.layer_metrics["nc1"], np.float64)[:, -1, :])  # (seed, hidden layer)
    layers = np.arange(1, c.depth + 1)
    if c.depth >= 2:
      slope = np.polyfit(layers, log_nc1.T, 1)[0]
    else:
      slope = np.full(log_nc1.shape[0], np.nan)
    v["nc1_decade_per_layer"] = (("seed",), slope)
    per.append(v)
  ds = xr.Dataset({k: (("setting",) + per[0][k][0], np.stack([p[k][1] for p in per])) for k in per[0]},
                  coords={"setting": list(settings), "seed": ctx.axes["seed"], "epoch": list(cfg.epochs),
                          "layer": np.arange(0, c.depth + 1)})
  ds.attrs.update(K=10, n=n, width=c.width, depth=c.depth, lam_W=c.lam_W, lam_H=c.lam_H,
                  weight_decay=c.weight_decay, lr=c.lr, num_epochs=c.num_epochs)
  return ds


def summary(results: xr.Dataset, c) -> dict:
  """Per setting (converged seeds only): NC1 by layer at the end (mean), the fitted decades per layer (mean, sd),
  the per-layer factor through the hidden layers, the ETF error of the means by layer, NC1 by layer at the first
  measured epoch after 0, and the final accuracies."""
  a = results.attrs
  out = {"K": int(a["K"]), "n": int(a["n"]), "width": int(a["width"]), "depth": int(a["depth"]),
         "weight_decay": float(a["weight_decay"]), "lam_W": float(a["lam_W"]), "lam_H": float(a["lam_H"]),
         "num_epochs": int(a["num_epochs"]), "seeds": int(results.sizes["seed"]),
         "early_epoch": int(results.epoch.values[1]), "settings": {}}
  for s in results.setting.values:
    r = results.sel(setting=s)
    ok, _ = runner.gate(r.converged.values, r.diverged.values)
    d = {"converged": int(ok.sum())}
    if ok.any():
      g = r.isel(seed=np.flatnonzero(ok))
      nc1 = g.layer_nc1.values  # (seed, epoch, layer)
      d.update(nc1_end=[float(v) for v in nc1[:, -1, :].mean(0)], nc1_early=[float(v) for v in nc1[:, 1, :].mean(0)],
               slope=N.mean_sd(g.nc1_decade_per_layer.values),
               factor_min=float((nc1[:, -1, 2:] / nc1[:, -1, 1:-1]).mean(0).min()),
               factor_max=float((nc1[:, -1, 2:] / nc1[:, -1, 1:-1]).mean(0).max()),
               etf_error_M_end=[float(v) for v in g.layer_etf_error_M.values[:, -1, :].mean(0)],
               train_acc_min=float(g.trace_train_acc.values[:, -1].min()),
               test_acc=N.mean_sd(g.trace_test_acc.values[:, -1]))
    out["settings"][str(s)] = d
  return out


def findings(summary: dict, c) -> str:
  """The ``figures/README.md`` text, every number from ``summary``."""
  S = summary
  parts = []
  for s, d in S["settings"].items():
    if not d["converged"]:
      parts.append(f"{s}: no seed converged")
      continue
    f = lambda xs: ", ".join(f"{x:.2g}" for x in xs)
    parts.append(f"{s} ({d['converged']}/{S['seeds']} seeds converged, test accuracy {100 * d['test_acc'][0]:.1f}%): "
                 f"NC1 by layer 0–{S['depth']} at the end {f(d['nc1_end'])}; least-squares slope of log10 NC1 over "
                 f"the hidden layers {d['slope'][0]:.3f} ± {d['slope'][1]:.3f} decades per layer (mean ± sd over "
                 f"seeds), the factor NC1(l+1)/NC1(l) between hidden layers ranging over {d['factor_min']:.2f}–"
                 f"{d['factor_max']:.2f}; ETF error of the class means by layer {f(d['etf_error_M_end'])}; at epoch "
                 f"{S['early_epoch']}, NC1 by layer {f(d['nc1_early'])}")
  return (f"{FIGURE}: MLP 64 → {S['width']}×{S['depth']} → {S['K']} on the digits ({S['n']} images per class), "
          f"{S['num_epochs']} epochs, plain loss (weight decay {S['weight_decay']:g}, λ_W = {S['lam_W']:g}, no "
          f"feature decay), {S['seeds']} seeds; layer 0 is the input (converged: 100% train accuracy and the "
          "objective within 1% over the last 10% of epochs). " + "; ".join(parts) + ". He & Su's geometric decay is "
          "a constant factor between layers (a straight line in log NC1 against layer).")


def plot(results: xr.Dataset, c):
  """Per setting (rows): NC1 against layer at several epochs; NC1, the trace ratio and CDNV against layer at the
  end; each hidden layer's NC1 against epoch."""
  from matplotlib import pyplot as plt
  S = results.sizes["setting"]
  fig, axs = plt.subplots(S, 3, figsize=(15, 4.2 * S), constrained_layout=True, squeeze=False)
  L = results.layer.values
  epochs = results.epoch.values
  cmap = plt.get_cmap("viridis")
  for row, s in zip(axs, results.setting.values):
    r0 = results.sel(setting=s)
    ok, note = runner.gate(r0.converged.values, r0.diverged.values)
    gate_txt = f"{int(ok.sum())}/{ok.size} seeds converged" + (f"; {note}" if note else "")
    if not ok.any():
      row[0].set_title(f"{s}: {gate_txt}; nothing drawn", fontsize=9)
      continue
    r = r0.isel(seed=np.flatnonzero(ok))
    nc1 = r.layer_nc1.values  # (seed, epoch, layer)
    for j, e in enumerate(epochs):
      row[0].plot(L, nc1[:, j, :].mean(0), color=cmap(j / max(len(epochs) - 1, 1)), marker="o", ms=3,
                  label=f"epoch {e}" if j in (0, len(epochs) // 2, len(epochs) - 1) else None)
    row[0].set(yscale="log", xlabel="layer (0 = input)", ylabel="NC1")
    row[0].set_title(f"{s} ({gate_txt}):\nNC1 by layer at every measured epoch (dark = early)", fontsize=9)
    row[0].legend(fontsize=8)
    cols = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (k, lab) in enumerate((("nc1", r"NC1 $\mathrm{tr}(\Sigma_W\Sigma_B^+)/K$"),
                                  ("nc1_ratio", r"$\mathrm{tr}\,\Sigma_W/\mathrm{tr}\,\Sigma_B$"), ("cdnv", "CDNV"),
                                  ("etf_error_M", "ETF error of means"))):
      if f"layer_{k}" not in r:
        continue
      Y = r[f"layer_{k}"].values[:, -1, :]
      row[1].plot(L, Y.mean(0), color=cols[i], marker="o", ms=3, label=lab)
      row[1].fill_between(L, Y.min(0), Y.max(0), color=cols[i], alpha=0.25, lw=0)
    slope = r.nc1_decade_per_layer.values
    row[1].set(yscale="log", xlabel="layer (0 = input)")
    row[1].set_title(f"{s}, epoch {epochs[-1]}:\nlog10 NC1 slope over the hidden layers {np.mean(slope):.2f}/layer",
                     fontsize=9)
    row[1].legend(fontsize=8)
    x = np.maximum(epochs, 0.5)
    for li in range(1, len(L)):
      _common.spread(row[2], x, nc1[:, :, li], color=cmap(li / max(len(L) - 1, 1)), label=f"layer {li}")
    row[2].set(xscale="log", yscale="log", xlabel="epoch", ylabel="NC1")
    row[2].set_title(f"{s}: NC1 of each hidden layer against epoch\ntrain acc "
                     f"{r.trace_train_acc.values[:, -1].mean():.3f}, test {r.trace_test_acc.values[:, -1].mean():.3f}",
                     fontsize=9)
    row[2].legend(fontsize=7, ncol=2)
  a = results.attrs
  fig.suptitle(f"MLP {a['width']}x{a['depth']} on digits (K=10, n={a['n']}); weight decay {a['weight_decay']:g}, "
               f"$\\lambda_W$={a['lam_W']:g} (classifier), feature decay $\\lambda_H$={a['lam_H']:g}; mean and min-max over "
               f"the converged seeds of {results.sizes['seed']}", fontsize=10)
  return fig
