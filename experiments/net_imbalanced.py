r"""Imbalanced digits: classifier norms and angles against class size in trained MLPs, beside the UFM.

The MLP of :mod:`experiments.net_nc_dynamics` trained on imbalanced subsamples of the digits: a step profile
(5 majority classes of 124 images, 5 minority classes of ``n_minor``; Fang et al. 2021) and a long-tailed one
(:math:`n_k = \lfloor 124\,\rho^{-k/9}\rfloor`; Cao et al. 2019), with two losses:

* **MSE without bias**: the UFM's minimiser is the *general orthogonal frame*: mutually orthogonal classifiers with
  :math:`\|w_k\|^2 = \sqrt{n_k\lambda_H/\lambda_W} - N\lambda_H` (zero below the threshold) (Dang et al. 2023,
  arXiv 2301.00437, at depth 1; :func:`ufm.theory.predict`);
* **CE with bias**: no closed form; the UFM's global minimiser from the convex reference
  :func:`ufm.convex.ce_convex`, whose minority classifiers shrink and align as :math:`n_A/n_B` grows (minority
  collapse, Fang et al. 2021, arXiv 2101.12699, Thm. 5).

Both with the network's ``K``, ``n_k``, :math:`\lambda_W` (the classifier's decay) and :math:`\lambda_H` (the explicit
feature decay it trains with), through :func:`ufm.networks.compare_with_ufm`. Shown: :math:`\|w_k\|` and the
class-mean norms against :math:`n_k`, and the classifier cosines, measured (every seed) and predicted.
"""

import numpy as np
import xarray as xr

import ufm
from experiments import _common
from experiments import _networks as N
from ufm import networks as nets

PAPER = "Fang et al. 2021; Dang et al. 2023; Thrampoulidis et al. 2022"
FIGURE = "new (MLPs on imbalanced digits against the UFM minimiser; Fang et al. 2021 train VGG/ResNet)"
RUNTIME = "90 s (measured under load)"

PROFILES = ("step", "long_tailed")


def get_config(arg: str | None = None):
  """Full: settings CE+bias and MSE (no bias) x profiles step (n_minor 6) and long-tailed (rho 40), 3 seeds, 600
  epochs, lam_W 5e-3, lam_H 1e-3. ``"smoke"``: MSE, step profile (n_major 20, n_minor 4), 2 seeds, 3 epochs."""
  c = N.base_config()
  c.settings = ("ce+bias", "mse")
  c.profiles = PROFILES
  c.n_major, c.n_minor, c.rho = 124, 6, 40.0
  c.lam_W, c.lam_H, c.batch_size = 5e-3, 1e-3, 64
  # fast_compile: XLA -O0. At the default level this program's execution hung (all threads idle) in 2 of 3 runs
  # on the loaded 2-core CPU; -O0 ran every time (measured when the network experiments were added).
  c.fast_compile = True
  c.num_seeds = 3  # with 4 vmapped seeds this program's execution hung (all threads idle) in every run; 3 ran
  c.metrics, c.layer_metrics = ("nc1",), ("nc1",)  # the figure uses the final geometry (compare_with_ufm)
  if _common.variant(arg) == "smoke":
    c.settings, c.profiles, c.num_seeds, c.width, c.depth = ("mse",), ("step",), 2, 16, 1
    c.n_major, c.n_minor, c.batch_size = 20, 4, 24
    c.num_epochs, c.num_points, c.metrics, c.layer_metrics, c.fast_compile = 3, 2, ("nc1",), ("nc1",), True
  return c



def _counts(c, profile):
  if profile == "step":
    return ufm.step_counts(10, K_major=5, n_major=c.n_major, n_minor=c.n_minor)
  return ufm.long_tailed_counts(10, n_max=c.n_major, rho=c.rho)


def _cos(G):
  n = np.sqrt(np.maximum(np.diag(G), 0.0))
  return G / np.maximum(np.outer(n, n), 1e-300)


def run(c, ctx) -> xr.Dataset:
  """Dims ``(profile, setting, seed, class[, class2])`` for the measured ``norm_w``, ``norm_m``, ``cos_w``;
  ``(profile, setting, class[, class2])`` for the predicted ``pred_*``; ``(profile, class)`` for ``counts``."""
  settings = N.check_settings(c.settings)
  profiles = _common.check_settings(c.profiles, PROFILES, key="profiles")
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
      res = nets.train(keys, data, hp, net=net, config=cfg,
                       progress=f"net_imbalanced[{p},{s}]" if ctx.progress else False)
      cmp = [nets.compare_with_ufm(f.W, f.hidden[-1], f.b if bias else None, counts[p], loss=loss, lam_W=c.lam_W,
                                   lam_H=c.lam_H, names=("nc1",)) for f in N.final_features(net, res, data.X)]
      row = {
          "norm_w": (("seed", "class"), np.stack([x.norms_W for x in cmp])),
          "norm_m": (("seed", "class"), np.stack([np.sqrt(np.maximum(np.diag(x.gram_M), 0)) for x in cmp])),
          "cos_w": (("seed", "class", "class2"), np.stack([_cos(x.gram_W) for x in cmp])),
          "gram_W_distance": (("seed",), np.asarray([x.gram_W_distance for x in cmp])),
          "gram_M_distance": (("seed",), np.asarray([x.gram_M_distance for x in cmp])),
          "nc1": (("seed",), np.asarray([x.metrics["nc1"] for x in cmp])),
          "train_acc": (("seed",), np.asarray(res.trace.train_acc[:, -1], np.float64)),
          "test_acc": (("seed",), np.asarray(res.trace.test_acc[:, -1], np.float64)),
          "diverged": (("seed",), np.asarray(res.diverged)),
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
                                     "class": np.arange(10), "class2": np.arange(10)})
  ds.attrs.update(width=c.width, depth=c.depth, lam_W=c.lam_W, lam_H=c.lam_H, weight_decay=c.weight_decay,
                  num_epochs=c.num_epochs, n_major=c.n_major, n_minor=c.n_minor, rho=c.rho)
  return ds


def plot(results: xr.Dataset, c):
  """Rows = profiles; columns: ||w_k|| vs n_k, class-mean norm vs n_k, classifier cosines (measured vs predicted)."""
  from matplotlib import pyplot as plt
  P = results.sizes["profile"]
  fig, axs = plt.subplots(P, 3, figsize=(15, 4.3 * P), constrained_layout=True, squeeze=False)
  cols = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for row, p in zip(axs, results.profile.values):
    n_k = results.counts.sel(profile=p).values
    for i, s in enumerate(results.setting.values):
      r = results.sel(profile=p, setting=s)
      col = cols[i % len(cols)]
      lab = f"{s}: {r.geometry.item()}"
      for ax, var in ((row[0], "norm_w"), (row[1], "norm_m")):
        meas = r[var].values  # (seed, class)
        jitter = 1 + 0.03 * (np.arange(meas.shape[0]) - meas.shape[0] / 2)
        for j in range(meas.shape[0]):
          ax.scatter(n_k * jitter[j], meas[j], s=12, color=col, alpha=0.6, label=f"{lab} (network)" if j == 0 else None)
        order = np.argsort(n_k)
        ax.plot(n_k[order], r[f"pred_{var}"].values[order], color=col, ls="--", marker="x", label=f"{s}: UFM")
      C = r.cos_w.values
      iu = np.triu_indices(10, 1)
      pred = r.pred_cos_w.values[iu]
      meas = C[:, iu[0], iu[1]]
      row[2].scatter(np.broadcast_to(pred, meas.shape), meas, s=10, color=col, alpha=0.5,
                     label=f"{s}: Gram dist {r.gram_W_distance.values.mean():.2f}")
    row[0].set(xscale="log", xlabel="$n_k$", ylabel=r"$\|w_k\|$")
    row[0].set_title(f"{p}: classifier norms, counts {tuple(int(x) for x in n_k)}", fontsize=9)
    row[1].set(xscale="log", xlabel="$n_k$", ylabel=r"$\|\bar h_k\|$ (centred with a bias)")
    row[1].set_title(f"{p}: class-mean feature norms vs class size", fontsize=9)
    lim = [-0.5, 1.05]
    row[2].plot(lim, lim, color="k", lw=0.8)
    row[2].set(xlim=lim, ylim=lim, xlabel=r"UFM $\cos(w_k, w_{k'})$", ylabel=r"network $\cos(w_k, w_{k'})$")
    row[2].set_title(f"{p}: classifier cosines, every pair and seed", fontsize=9)
    for ax in row:
      ax.legend(fontsize=7)
  a = results.attrs
  fig.suptitle(f"MLP {a['width']}x{a['depth']} on imbalanced digits, {a['num_epochs']} epochs; weight decay "
               f"{a['weight_decay']:g}, $\\lambda_W$={a['lam_W']:g}, $\\lambda_H$={a['lam_H']:g}; UFM with the same "
               f"K, $n_k$, $\\lambda_W$, $\\lambda_H$ (dashed)", fontsize=10)
  return fig
