"""Helpers shared by the network experiments (``net_*``): configs, training runs, traces as xarray, comparisons."""

import contextlib
import io
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import _common
from ufm import data as D
from ufm import networks as nets

#: Setting label -> (loss, bias of the classifier).
SETTINGS = {"ce+bias": ("ce", True), "ce": ("ce", False), "mse+bias": ("mse", True), "mse": ("mse", False)}


def base_config() -> ml_collections.ConfigDict:
  """The shared network-training knobs (digits, an MLP 64 -> width^depth -> 10, SGD + momentum, cosine lr)."""
  c = ml_collections.ConfigDict()
  c.seed, c.num_seeds, c.data_seed = 0, 4, 0
  c.width, c.depth = 128, 3
  c.optimizer, c.lr, c.momentum, c.lr_schedule, c.batch_size = "sgd", 0.05, 0.9, "cosine", 128
  # The plain network loss: weight decay on the parameters only (hidden layers weight_decay, classifier lam_W), no
  # decay on the features (lam_H = 0); lam_H > 0 is the UFM's explicit feature decay (Zhu et al.'s --sep_decay).
  c.weight_decay, c.lam_W, c.lam_H = 5e-4, 5e-4, 0.0
  c.num_epochs, c.num_points = 600, 14
  c.metrics = ()  # () = every metric of ufm.metrics.METRICS; a smoke config names fewer (faster to compile)
  c.layer_metrics = ()  # () = every metric of ufm.networks.LAYER_METRICS
  c.fast_compile = False  # True: XLA optimisation level 0 (compiles 3-4x faster, runs ~2x slower; smoke configs)
  c.x64 = True  # training is float32 (explicit dtypes); x64 only for the float64 UFM predictions
  return c


#: A network run counts as *converged* (the ``converged`` flag of :func:`experiments.runner.convergence`) when it
#: classifies every training image correctly at its last epoch and its full-batch training objective (loss plus
#: decays, :attr:`ufm.networks.NetTrace.objective`) changed by at most ``PLATEAU_TOL`` (relative) over the last
#: ``PLATEAU_FRACTION`` of its epochs: the terminal phase of Papyan et al. 2020 (zero training error, loss on a
#: plateau). A run with a non-finite loss is *diverged*; any other run *stopped* (budget spent first).
PLATEAU_TOL = 1e-2
PLATEAU_FRACTION = 0.1


def epochs(c) -> tuple[int, ...]:
  """The measurement epochs: ``num_points`` log-spaced ones and the start of the plateau window
  (``(1 - PLATEAU_FRACTION) * num_epochs``)."""
  grid = nets.log_epochs(c.num_epochs, c.num_points)
  return tuple(sorted(set(grid) | {int(round((1 - PLATEAU_FRACTION) * c.num_epochs))}))


def convergence_vars(res: nets.TrainResult, epoch_list, prefix_dims=("seed",)) -> dict:
  """``converged`` / ``diverged`` (the definition at :data:`PLATEAU_TOL`), and the two numbers behind it:
  ``final_train_acc`` and ``plateau_change`` (relative change of the objective over the plateau window)."""
  ep = np.asarray(epoch_list)
  j = int(np.flatnonzero(ep[:-1] <= (1 - PLATEAU_FRACTION) * ep[-1])[-1])
  obj = np.asarray(res.trace.objective, np.float64)
  change = np.abs(obj[..., -1] - obj[..., j]) / np.maximum(np.abs(obj[..., j]), 1e-300)
  acc = np.asarray(res.trace.train_acc, np.float64)[..., -1]
  div = np.asarray(res.diverged, bool) | ~np.isfinite(obj[..., -1])
  conv = (acc >= 1.0) & (change <= PLATEAU_TOL) & ~div
  dims = tuple(prefix_dims)
  return {"converged": (dims, conv), "diverged": (dims, div), "final_train_acc": (dims, acc),
          "plateau_change": (dims, change)}


def first_epoch(epoch_list, acc) -> int | None:
  """The first measured epoch from which ``acc`` (per seed, along the epochs) stays at 1 in every seed; ``None``
  when it never does."""
  acc = np.asarray(acc, np.float64).reshape(-1, len(epoch_list))
  full = (acc >= 1.0).all(0)
  for i in range(len(full)):
    if full[i:].all():
      return int(epoch_list[i])
  return None


def mean_sd(x) -> list[float]:
  """``[mean, sd]`` (sample sd, 0 for one value) of a 1-D array."""
  x = np.asarray(x, np.float64).ravel()
  return [float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0]


def keys(c) -> jax.Array:
  """One key per seed: ``seeds(c)`` as ``jax.random.key``s."""
  return jnp.stack([jax.random.key(int(s)) for s in _common.seeds(c)])


def hparams(c, **over) -> nets.TrainHparams:
  kw = dict(momentum=c.momentum, weight_decay=c.weight_decay, lam_W=c.lam_W, lam_H=c.lam_H)
  kw.update(over)
  return nets.train_hparams(c.lr, **kw)


def train_config(c, loss: str, *, mixup: bool = False) -> nets.TrainConfig:
  return nets.train_config(loss=loss, optimizer=c.optimizer, batch_size=c.batch_size,
                           epochs=epochs(c), lr_schedule=c.lr_schedule, mixup=mixup,
                           metrics=tuple(c.metrics) or None, layer_metrics=tuple(c.layer_metrics) or None,
                           fast_compile=c.fast_compile)


def train(keys, data, hp, *, net, config, label: str, progress: bool) -> nets.TrainResult:
  """:func:`ufm.networks.train`, always as one jitted call per measurement segment (its progress-bar path, the same
  computation), the bar shown only when ``progress``. The one-program path's execution hung (every thread idle, no
  CPU time for minutes) for the full configurations on the loaded 2-core CPU, at XLA -O0 and -O2 alike; the
  segmented path ran every time."""
  if progress:
    return nets.train(keys, data, hp, net=net, config=config, progress=label)
  with contextlib.redirect_stderr(io.StringIO()):
    return nets.train(keys, data, hp, net=net, config=config, progress=label)


def check_settings(names) -> tuple[str, ...]:
  return _common.check_settings(names, SETTINGS)


def digits(c, counts=None) -> D.Dataset:
  return D.digits(jax.random.key(_common.check_int("data_seed", c.data_seed, lo=0)), counts)


def trace_vars(trace: nets.NetTrace, prefix_dims=("seed",)) -> dict:
  """The trace as ``{name: (dims, array)}`` with dims ``prefix_dims + ("epoch",)`` (``+ ("layer",)``)."""
  dims = tuple(prefix_dims) + ("epoch",)
  out = {f"trace_{k}": (dims, np.asarray(getattr(trace, k), np.float64))
         for k in ("train_loss", "test_loss", "train_acc", "test_acc", "objective")}
  out.update({f"trace_{k}": (dims, np.asarray(v, np.float64)) for k, v in trace.metrics.items()})
  out.update({f"layer_{k}": (dims + ("layer",), np.asarray(v, np.float64)) for k, v in trace.layer_metrics.items()})
  return out


def final_features(net, res: nets.TrainResult, X) -> list[nets.Features]:
  """:func:`ufm.networks.features` of every seed's trained network on ``X``."""
  S = np.shape(res.diverged)[0]
  return [nets.features(net, jax.tree.map(lambda x, i=i: x[i], res.state), X) for i in range(S)]
