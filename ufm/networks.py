r"""Real networks in Flax (``flax.nnx``): neural collapse measured in trained networks, beside the UFM.

The unconstrained features model (UFM) treats the penultimate features :math:`h_i` of a network as free
variables. This module trains the network whose last layers the UFM models and measures the same
quantities on it:

* **Models.** :class:`MLP` (``depth`` hidden ReLU layers of ``width`` units) and :class:`CNN` (two 3x3
  convolutions and a dense layer), each ending in a linear classifier :math:`z = W h + b` with ``W``
  (``K x d``) stored in the UFM's orientation, optionally a *fixed* simplex-ETF classifier (Fisher et al.
  2024, arXiv 2402.06171, the classifier assumption of their mixup UFM; Zhu et al. 2021, arXiv 2105.02375,
  Sec. 5) and optionally no bias. :meth:`MLP.features` returns every hidden layer's features.
* **Objective** (the UFM's normalisation, :mod:`ufm.objectives`, on a mini-batch ``B`` of the ``N``
  training samples):

  .. math::
     \frac1{|B|}\sum_{i\in B} \ell(W h_\theta(x_i) + b, y_i)
     + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_\theta}{2}\|\theta\|^2
     + \frac{\lambda_H}{2}\,\frac{N}{|B|}\sum_{i\in B}\|h_\theta(x_i)\|^2 ,

  with :math:`\ell` the softmax cross-entropy or :math:`\frac12\|z - y\|^2` (``"mse"``), :math:`\theta` the
  hidden layers' parameters (weight decay ``weight_decay``), ``lam_W`` the classifier's decay and ``lam_H``
  an optional explicit feature decay, scaled so that the last term is an unbiased estimate of the UFM's
  :math:`\frac{\lambda_H}{2}\|H\|_F^2` over all ``N`` samples (the "separate decay" of Zhu et al. 2021,
  arXiv 2105.02375, ``--sep_decay``). The classifier's bias is not decayed (:math:`\lambda_b = 0`).
  Optional label smoothing (targets :math:`(1-\epsilon)e_y + \epsilon/K`) and mixup (Zhang et al. 2018,
  arXiv 1710.09412: per-example :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`, partners a random
  permutation of the batch, loss :math:`\lambda\ell(z, y) + (1 - \lambda)\ell(z, y')`).
* **Training** (:func:`train`) is one pure, jitted program: the module is split into its graph and its state
  (``nnx.split``) at the ``jit`` boundary and merged (``nnx.merge``) inside the loss; epochs run in a
  ``lax`` loop and mini-batches in ``lax.scan``; SGD with momentum (heavy ball) or Adam (optax), with a
  constant, step (:math:`\div 10` at 1/3 and 2/3 of training, Papyan et al. 2020) or cosine learning rate.
  A 1-D array of keys trains one network per key under ``vmap`` (the seed axis leads every result).
  Optionally a progress bar counting epochs (one jitted call per measurement segment; no host callbacks inside
  the compiled program).
* **Measurement.** At a log-spaced schedule of epochs (:func:`log_epochs`) every metric of
  :data:`ufm.metrics.METRICS` on the penultimate features with the classifier, the feature metrics
  :data:`LAYER_METRICS` on every hidden layer, and train/test loss and accuracy. Training to 100% train
  accuracy and beyond is the terminal phase of Papyan, Han & Donoho (2020, arXiv 2008.08186).
* **UFM comparison.** :func:`compare_with_ufm` builds the UFM problem with the network's ``K``, ``n_k`` and
  weight decays and returns :func:`ufm.theory.predict`'s geometry (or, for imbalanced CE, the convex
  reference :func:`ufm.convex.ce_convex`) beside the network's: Grams, norms and every NC metric.
* :func:`measure`: every NC metric of anyone's features (``N x d``), labels and classifier.

Unlike the UFM solvers, this module imports :mod:`ufm.theory` (for the fixed ETF classifier and for the
comparison); no training quantity depends on a prediction.
"""

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from ufm import convex, metrics, theory
from ufm import metrics as _metrics_mod  # train_config's argument is named metrics
from ufm.data import Dataset
from ufm.problem import Params, _check_int, check_dtype, check_real, make_problem

__all__ = [
    "CNN",
    "Comparison",
    "Features",
    "Fixed",
    "LAYER_METRICS",
    "MLP",
    "NetSpec",
    "NetTrace",
    "TrainConfig",
    "TrainHparams",
    "TrainResult",
    "build",
    "cnn",
    "compare_with_ufm",
    "features",
    "log_epochs",
    "measure",
    "mlp",
    "train",
    "train_config",
    "train_hparams",
]

#: Metrics of :data:`ufm.metrics.METRICS` that depend on the features only (measured on every hidden layer).
LAYER_METRICS = ("nc1", "nc1_ratio", "cdnv", "equinorm_M", "equiangularity_M", "max_angle_M", "etf_error_M",
                 "of_error_M", "gnc2", "gnc2_var", "norm_H_sq")


class Fixed(nnx.Variable):
  """A non-trainable variable (a fixed classifier, or the zero bias of a bias-free classifier)."""


class ClassifierW(nnx.Param):
  """The classifier ``W`` (``K x d``): decayed with ``lam_W``, not ``weight_decay``."""


class ClassifierB(nnx.Param):
  """The classifier bias ``b`` (``K``): not decayed."""


# ------------------------------------------------------------------------------------------ models

class Classifier(nnx.Module):
  r"""The linear classifier :math:`z = W h + b`, ``W`` ``K x d`` (UFM orientation, LeCun-normal init).
  ``fixed_etf``: ``W = etf_scale * ufm.theory.simplex_etf(K, d, key=...).T`` (rows of norm ``etf_scale``, cosines
  :math:`-1/(K-1)`, a Haar-random embedding drawn from the init key), not trained. (Embedded on the first ``K-1``
  coordinate axes instead, every Helmert column favours class 0, so non-negative (ReLU) features could never make
  another class win.) ``bias=False``: ``b = 0``, not trained."""

  def __init__(self, d: int, K: int, *, bias: bool, fixed_etf: bool, etf_scale: float, dtype, rngs: nnx.Rngs):
    if fixed_etf:  # a Haar-random embedding: on the first K-1 axes, ReLU (>= 0) features could never beat class 0
      self.W = Fixed(etf_scale * theory.simplex_etf(K, d, key=rngs.params(), dtype=dtype).T)
    else:
      self.W = ClassifierW(jax.nn.initializers.lecun_normal()(rngs.params(), (d, K), dtype).T)
    self.b = ClassifierB(jnp.zeros((K,), dtype)) if bias else Fixed(jnp.zeros((K,), dtype))

  def __call__(self, h):
    return h @ self.W[...].T + self.b[...][None, :]


class MLP(nnx.Module):
  """``depth`` hidden layers ``Linear -> ReLU`` of ``width`` units (He-normal init), then :class:`Classifier`."""

  def __init__(self, d_in: int, K: int, *, width: int, depth: int, bias: bool = True, fixed_etf: bool = False,
               etf_scale: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs):
    init = jax.nn.initializers.he_normal()
    self.hidden = nnx.List([nnx.Linear(d_in if i == 0 else width, width, kernel_init=init, dtype=dtype,
                                       param_dtype=dtype, rngs=rngs) for i in range(depth)])
    self.classifier = Classifier(width, K, bias=bias, fixed_etf=fixed_etf, etf_scale=etf_scale, dtype=dtype,
                                 rngs=rngs)

  def features(self, x) -> list:
    """Every hidden layer's output ``(N, width)``, first to last (the last is the penultimate layer)."""
    out = []
    for layer in self.hidden:
      x = nnx.relu(layer(x))
      out.append(x)
    return out

  def __call__(self, x):
    return self.classifier(self.features(x)[-1])


class CNN(nnx.Module):
  """``Conv3x3(channels) -> ReLU -> Conv3x3(2 channels, stride 2) -> ReLU -> Dense(width) -> ReLU`` then
  :class:`Classifier`; inputs ``(N, H, W, C)``. Hidden features are the flattened layer outputs."""

  def __init__(self, input_shape: tuple, K: int, *, channels: int, width: int, bias: bool = True,
               fixed_etf: bool = False, etf_scale: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs):
    Hh, Ww, C = input_shape
    init = jax.nn.initializers.he_normal()
    kw = dict(kernel_init=init, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.conv1 = nnx.Conv(C, channels, (3, 3), **kw)
    self.conv2 = nnx.Conv(channels, 2 * channels, (3, 3), strides=2, **kw)
    flat = math.ceil(Hh / 2) * math.ceil(Ww / 2) * 2 * channels
    self.dense = nnx.Linear(flat, width, **kw)
    self.classifier = Classifier(width, K, bias=bias, fixed_etf=fixed_etf, etf_scale=etf_scale, dtype=dtype,
                                 rngs=rngs)

  def features(self, x) -> list:
    """The three hidden layers' outputs, flattened to ``(N, d_l)``."""
    a1 = nnx.relu(self.conv1(x))
    a2 = nnx.relu(self.conv2(a1))
    a3 = nnx.relu(self.dense(a2.reshape(a2.shape[0], -1)))
    return [a1.reshape(a1.shape[0], -1), a2.reshape(a2.shape[0], -1), a3]

  def __call__(self, x):
    return self.classifier(self.features(x)[-1])


@dataclasses.dataclass(frozen=True)
class NetSpec:
  """Static description of a network (hashable: a ``jit`` static argument). Build with :func:`mlp` / :func:`cnn`."""
  arch: str
  input_shape: tuple
  K: int
  width: int
  depth: int
  channels: int
  bias: bool
  fixed_etf: bool
  etf_scale: float
  dtype: str

  @property
  def d(self) -> int:
    """Penultimate feature dimension."""
    return self.width


def _check_bool(name, v):
  if not isinstance(v, (bool, np.bool_)):
    raise ValueError(f"{name} = {v!r} is not a boolean; allowed values: True, False")
  return bool(v)


def _check_etf(K, width, fixed_etf, etf_scale):
  if fixed_etf and width < K - 1:
    raise ValueError(f"width = {width} is out of range for a fixed simplex-ETF classifier of K = {K} classes; "
                     f"allowed range: width >= K-1 = {K - 1}")
  return float(check_real("etf_scale", etf_scale, lo=0.0, lo_open=True))


def mlp(input_shape, K, *, width=128, depth=3, bias=True, fixed_etf=False, etf_scale=1.0,
        dtype=jnp.float32) -> NetSpec:
  """An :class:`MLP` spec: inputs of shape ``input_shape`` (flattened), ``K >= 2`` classes, ``depth >= 1`` hidden
  layers of ``width >= 1`` units; ``fixed_etf`` needs ``width >= K - 1``."""
  shape = tuple(int(s) for s in np.atleast_1d(input_shape))
  K, width, depth = _check_int("K", K, lo=2), _check_int("width", width, lo=1), _check_int("depth", depth, lo=1)
  bias, fixed_etf = _check_bool("bias", bias), _check_bool("fixed_etf", fixed_etf)
  return NetSpec("mlp", shape, K, width, depth, 0, bias, fixed_etf, _check_etf(K, width, fixed_etf, etf_scale),
                 check_dtype(dtype).name)


def cnn(input_shape, K, *, channels=16, width=64, bias=True, fixed_etf=False, etf_scale=1.0,
        dtype=jnp.float32) -> NetSpec:
  """A :class:`CNN` spec for images ``input_shape = (H, W, C)``; the penultimate width is ``width``."""
  shape = tuple(int(s) for s in input_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"input_shape = {shape!r}; allowed: (H, W, C), each >= 1 (use image=True in ufm.data.digits)")
  K, width = _check_int("K", K, lo=2), _check_int("width", width, lo=1)
  channels = _check_int("channels", channels, lo=1)
  bias, fixed_etf = _check_bool("bias", bias), _check_bool("fixed_etf", fixed_etf)
  return NetSpec("cnn", shape, K, width, 3, channels, bias, fixed_etf, _check_etf(K, width, fixed_etf, etf_scale),
                 check_dtype(dtype).name)


def build(key: jax.Array, net: NetSpec) -> nnx.Module:
  """The Flax module of ``net`` with parameters drawn from ``key``."""
  rngs = nnx.Rngs(params=key)
  kw = dict(bias=net.bias, fixed_etf=net.fixed_etf, etf_scale=net.etf_scale, dtype=jnp.dtype(net.dtype), rngs=rngs)
  if net.arch == "mlp":
    return MLP(int(np.prod(net.input_shape)), net.K, width=net.width, depth=net.depth, **kw)
  return CNN(net.input_shape, net.K, channels=net.channels, width=net.width, **kw)


def _split(model):
  """``(graphdef, trainable, fixed)``: trainable = (classifier W, classifier b, hidden parameters)."""
  graphdef, W, b, hidden, fixed = nnx.split(model, ClassifierW, ClassifierB, nnx.Param, ...)
  return graphdef, (W, b, hidden), fixed


@functools.lru_cache(maxsize=64)
def _graphdef(net: NetSpec):
  return _split(build(jax.random.key(0), net))[0]


def _inputs(net: NetSpec, X):
  return X.reshape(X.shape[0], -1) if net.arch == "mlp" else X


class Features(NamedTuple):
  """A network's outputs on a batch: ``hidden`` (every hidden layer, ``(N, d_l)``), ``logits`` ``(N, K)``, and
  its classifier ``W`` (``K x d``) and ``b`` (``K``)."""
  hidden: tuple
  logits: jax.Array
  W: jax.Array
  b: jax.Array


@functools.partial(jax.jit, static_argnames=("net",))  # no compiler_options: callable under a user's jit/vmap
def features(net: NetSpec, state, X) -> Features:
  """Features of every hidden layer, logits and classifier of the network ``(net, state)`` on inputs ``X`` (jitted).

  ``state`` is :attr:`TrainResult.state` of one network (index the seed axis first, or ``vmap``).
  """
  model = nnx.merge(_graphdef(net), *state[0], state[1])
  hs = model.features(_inputs(net, X))
  return Features(hidden=tuple(hs), logits=model.classifier(hs[-1]), W=model.classifier.W[...],
                  b=model.classifier.b[...])


# ------------------------------------------------------------------------------------------ training

class TrainHparams(NamedTuple):
  """Numeric training knobs (array leaves: a new value never recompiles). Build with :func:`train_hparams`."""
  lr: jax.Array
  momentum: jax.Array
  weight_decay: jax.Array
  lam_W: jax.Array
  lam_H: jax.Array
  label_smoothing: jax.Array
  mixup_alpha: jax.Array


def train_hparams(lr=0.05, *, momentum=0.9, weight_decay=5e-4, lam_W=None, lam_H=0.0, label_smoothing=0.0,
                  mixup_alpha=1.0, dtype=jnp.float32) -> TrainHparams:
  """Validated :class:`TrainHparams`: ``lr > 0``, ``0 <= momentum < 1``, decays ``>= 0`` (``lam_W`` defaults to
  ``weight_decay``), ``0 <= label_smoothing < 1``, ``mixup_alpha > 0`` (used only with ``mixup=True``)."""
  lam_W = weight_decay if lam_W is None else lam_W
  v = dict(lr=check_real("lr", lr, lo=0.0, lo_open=True), momentum=check_real("momentum", momentum, lo=0.0, hi=1.0,
                                                                               hi_open=True),
           weight_decay=check_real("weight_decay", weight_decay, lo=0.0), lam_W=check_real("lam_W", lam_W, lo=0.0),
           lam_H=check_real("lam_H", lam_H, lo=0.0),
           label_smoothing=check_real("label_smoothing", label_smoothing, lo=0.0, hi=1.0, hi_open=True),
           mixup_alpha=check_real("mixup_alpha", mixup_alpha, lo=0.0, lo_open=True))
  dt = check_dtype(dtype)
  return TrainHparams(**{k: jnp.asarray(x, dt) for k, x in v.items()})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Static training choices (hashable). Build with :func:`train_config`."""
  loss: str
  optimizer: str
  batch_size: int
  epochs: tuple
  lr_schedule: str
  mixup: bool
  metrics: tuple
  layer_metrics: tuple
  fast_compile: bool

  @property
  def num_epochs(self) -> int:
    return self.epochs[-1]


def log_epochs(num_epochs: int, num_points: int) -> tuple[int, ...]:
  """About ``num_points`` distinct epochs from 0 to ``num_epochs``, log-spaced (0, 1, 2, ..., ``num_epochs``)."""
  num_epochs, num_points = _check_int("num_epochs", num_epochs, lo=1), _check_int("num_points", num_points, lo=2)
  grid = np.unique(np.round(np.geomspace(1, num_epochs, num_points - 1)).astype(int))
  return (0,) + tuple(int(e) for e in grid)


def train_config(*, loss="ce", optimizer="sgd", batch_size=128, epochs=(0, 1, 10, 100), lr_schedule="constant",
                 mixup=False, metrics=None, layer_metrics=None, fast_compile=False) -> TrainConfig:
  """Validated :class:`TrainConfig`. ``epochs``: the strictly increasing measurement epochs (``>= 0``; the last
  is the length of training; see :func:`log_epochs`). ``metrics`` (default: all of :data:`ufm.metrics.METRICS`)
  and ``layer_metrics`` (default: :data:`LAYER_METRICS`) name what is measured on the penultimate layer and on
  every hidden layer (fewer names compile faster: every metric adds to the program). ``fast_compile``: compile
  with XLA's backend optimisation level 0 (3-4x faster to compile, about 2x slower to run; for short runs)."""
  names = tuple(_metrics_mod.METRICS) if metrics is None else tuple(metrics)
  layer_names = LAYER_METRICS if layer_metrics is None else tuple(layer_metrics)
  for key, val, allowed in (("metrics", names, tuple(_metrics_mod.METRICS)),
                            ("layer_metrics", layer_names, LAYER_METRICS)):
    bad = [n for n in val if n not in allowed]
    if bad or len(set(val)) != len(val):
      raise ValueError(f"{key} = {val!r}: allowed: distinct names among {', '.join(allowed)}")
  if loss not in ("ce", "mse"):
    raise ValueError(f"loss = {loss!r} is not supported; allowed values: ce, mse")
  if optimizer not in ("sgd", "adam"):
    raise ValueError(f"optimizer = {optimizer!r} is not supported; allowed values: sgd, adam")
  if lr_schedule not in ("constant", "step", "cosine"):
    raise ValueError(f"lr_schedule = {lr_schedule!r} is not supported; allowed values: constant, step, cosine")
  batch_size = _check_int("batch_size", batch_size, lo=1)
  ep = tuple(_check_int(f"epochs[{i}]", e, lo=0) for i, e in enumerate(epochs))
  if not ep or any(b <= a for a, b in zip(ep, ep[1:])) or ep[-1] < 1:
    raise ValueError(f"epochs = {epochs!r}; allowed: a strictly increasing tuple of integers >= 0 ending >= 1")
  return TrainConfig(loss, optimizer, batch_size, ep, lr_schedule, _check_bool("mixup", mixup), names, layer_names,
                     _check_bool("fast_compile", fast_compile))


class NetTrace(NamedTuple):
  """Measurements at the epochs of :attr:`TrainConfig.epochs` (leading axis ``M``; a seed axis before it when
  vmapped).

  Attributes:
    epoch: the measurement epochs ``(M,)``.
    train_loss, test_loss: the mean loss (no regularisation) on the train / test set.
    train_acc, test_acc: accuracies.
    objective: the regularised training objective on the full training set.
    metrics: each name of ``config.metrics`` (default: all of :data:`ufm.metrics.METRICS`) -> ``(M,)``, on the
      penultimate features and the classifier.
    layer_metrics: each name of ``config.layer_metrics`` (default :data:`LAYER_METRICS`) -> ``(M, L)``, one column
      per hidden layer.
  """
  epoch: jax.Array
  train_loss: jax.Array
  test_loss: jax.Array
  train_acc: jax.Array
  test_acc: jax.Array
  objective: jax.Array
  metrics: dict
  layer_metrics: dict


class TrainResult(NamedTuple):
  """``state``: ``(trainable, fixed)`` nnx states of the trained network (for :func:`features`); ``trace``:
  :class:`NetTrace`; ``diverged``: a non-finite loss at some measurement (flagged, never raised)."""
  state: Any
  trace: NetTrace
  diverged: jax.Array


def _targets(cfg: TrainConfig, hp: TrainHparams, y, K, dtype):
  onehot = jax.nn.one_hot(y, K, dtype=dtype)
  return (1 - hp.label_smoothing) * onehot + hp.label_smoothing / K


def _loss(cfg: TrainConfig, logits, targets):
  """Per-sample loss: softmax cross-entropy against (soft) targets, or ``0.5 ||z - y||^2``."""
  if cfg.loss == "ce":
    return optax.softmax_cross_entropy(logits, targets)
  return 0.5 * jnp.sum((logits - targets) ** 2, axis=-1)


def _sq(tree):
  return sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))


def _objective(trainable, fixed, xb, tb, hp: TrainHparams, *, net: NetSpec, cfg: TrainConfig, N: int):
  model = nnx.merge(_graphdef(net), *trainable, fixed)
  h = model.features(xb)[-1]
  data = jnp.mean(_loss(cfg, model.classifier(h), tb))
  W, _, hidden = trainable
  reg = 0.5 * hp.lam_W * _sq(W) + 0.5 * hp.weight_decay * _sq(hidden) + 0.5 * hp.lam_H * N * jnp.mean(
      jnp.sum(h**2, axis=-1))
  return data + reg


def _lr_factor(cfg: TrainConfig, epoch, dtype):
  E = cfg.num_epochs
  e = epoch.astype(dtype)
  if cfg.lr_schedule == "step":
    return jnp.where(e < E / 3, 1.0, jnp.where(e < 2 * E / 3, 0.1, 0.01)).astype(dtype)
  if cfg.lr_schedule == "cosine":
    return (0.5 * (1 + jnp.cos(jnp.pi * e / E))).astype(dtype)
  return jnp.ones((), dtype)


def _measure(trainable, fixed, data: Dataset, hp: TrainHparams, *, net: NetSpec, cfg: TrainConfig):
  model = nnx.merge(_graphdef(net), *trainable, fixed)
  dt = jnp.dtype(net.dtype)
  X = _inputs(net, data.X)
  hs = model.features(X)
  logits = model.classifier(hs[-1])
  K = net.K
  t = _targets(cfg, hp, data.y, K, dt)
  train_loss = jnp.mean(_loss(cfg, logits, t))
  train_acc = jnp.mean((jnp.argmax(logits, -1) == data.y).astype(dt))
  if data.X_test.shape[0]:
    lt = model(_inputs(net, data.X_test))
    test_loss = jnp.mean(_loss(cfg, lt, _targets(cfg, hp, data.y_test, K, dt)))
    test_acc = jnp.mean((jnp.argmax(lt, -1) == data.y_test).astype(dt))
  else:
    test_loss = test_acc = jnp.full((), jnp.nan, dt)
  W, b = model.classifier.W[...], model.classifier.b[...]
  objective = train_loss + 0.5 * hp.lam_W * _sq(trainable[0]) + 0.5 * hp.weight_decay * _sq(trainable[2]) + (
      0.5 * hp.lam_H * jnp.sum(hs[-1] ** 2))
  problem = make_problem(data.counts, d=net.width, lam_W=0.0, lam_H=0.0, loss=cfg.loss, bias=net.bias, dtype=dt)
  m = metrics.compute(Params(W=W, H=hs[-1].T, b=b), problem, cfg.metrics)
  layer_fn = lambda H: metrics.compute(Params(W=jnp.zeros((K, H.shape[0]), dt), H=H, b=b), problem, cfg.layer_metrics)
  if len({h.shape[1] for h in hs}) == 1:  # equal widths (MLP): one vmapped program for all layers
    lm = jax.vmap(layer_fn)(jnp.stack([h.T for h in hs]))
  else:
    per_layer = [layer_fn(h.T) for h in hs]
    lm = {k: jnp.stack([p[k] for p in per_layer]) for k in cfg.layer_metrics}
  return train_loss, test_loss, train_acc, test_acc, objective, m, lm


def _init_one(key, hp: TrainHparams, *, net: NetSpec, cfg: TrainConfig):
  """The network's initial state: ``(carry, fixed)`` with ``carry = (trainable, optimiser state, epoch, key)``."""
  k_init, k_train = jax.random.split(key)
  _, trainable, fixed = _split(build(k_init, net))
  carry = (trainable, _optimiser(cfg, hp).init(trainable), jnp.zeros((), jnp.int32), k_train)
  return carry, fixed


def _optimiser(cfg: TrainConfig, hp: TrainHparams):
  """Heavy ball (``optax.trace``) or Adam's scaling; the learning rate is applied by the caller (its schedule)."""
  return optax.trace(decay=hp.momentum) if cfg.optimizer == "sgd" else optax.scale_by_adam()


def _segment_one(carry, fixed, n_epochs, data: Dataset, hp: TrainHparams, *, net: NetSpec, cfg: TrainConfig):
  """``n_epochs`` (traced) epochs of mini-batch training, then one measurement: ``(carry, (epoch, ...))``."""
  dt = jnp.dtype(net.dtype)
  N, K = data.N, net.K
  B = min(cfg.batch_size, N)
  nb = N // B
  X = _inputs(net, data.X)
  T = _targets(cfg, hp, data.y, K, dt)
  tx = _optimiser(cfg, hp)
  grad_fn = jax.grad(functools.partial(_objective, net=net, cfg=cfg, N=N))
  k_train = carry[3]

  def step(state, inp):
    trainable, opt_state, lr, k_epoch = state
    idx, i = inp
    xb, tb = X[idx], T[idx]
    if cfg.mixup:  # random draws only where needed: every threefry call adds to the compiled program
      k_lam, k_perm = jax.random.split(jax.random.fold_in(k_epoch, i))
      lam = jax.random.beta(k_lam, hp.mixup_alpha, hp.mixup_alpha, (B,), dt)
      perm = jax.random.permutation(k_perm, B)
      lx = lam.reshape((B,) + (1,) * (xb.ndim - 1))
      xb = lx * xb + (1 - lx) * xb[perm]
      tb = lam[:, None] * tb + (1 - lam[:, None]) * tb[perm]
    g = grad_fn(trainable, fixed, xb, tb, hp)
    u, opt_state = tx.update(g, opt_state, trainable)
    trainable = jax.tree.map(lambda p, d: p - lr * d, trainable, u)
    return (trainable, opt_state, lr, k_epoch), None

  def epoch_body(_, state):
    trainable, opt_state, epoch = state
    k = jax.random.fold_in(k_train, epoch)
    if nb == 1 and B == N:  # full batch: no shuffling
      idx = jnp.arange(N, dtype=jnp.int32)[None, :]
    else:  # a uniform permutation: argsort of i.i.d. uniforms
      idx = jnp.argsort(jax.random.uniform(k, (N,), jnp.float32))[: nb * B].reshape(nb, B)
    lr = hp.lr * _lr_factor(cfg, epoch, dt)
    (trainable, opt_state, _, _), _ = jax.lax.scan(step, (trainable, opt_state, lr, k),
                                                   (idx, jnp.arange(nb, dtype=jnp.int32)))
    return trainable, opt_state, epoch + 1

  trainable, opt_state, epoch = jax.lax.fori_loop(0, n_epochs, epoch_body, carry[:3])
  out = _measure(trainable, fixed, data, hp, net=net, cfg=cfg)
  return (trainable, opt_state, epoch, k_train), (epoch,) + out


def _gaps(cfg: TrainConfig) -> np.ndarray:
  return np.diff(np.asarray(cfg.epochs), prepend=0).astype(np.int32)


def _result(carry, fixed, outs) -> TrainResult:
  epoch, tl, vl, ta, va, obj, m, lm = outs
  trace = NetTrace(epoch=epoch, train_loss=tl, test_loss=vl, train_acc=ta, test_acc=va, objective=obj, metrics=m,
                   layer_metrics=lm)
  return TrainResult(state=(carry[0], fixed), trace=trace, diverged=~jnp.all(jnp.isfinite(obj), axis=-1))


def _train_one(key, data: Dataset, hp: TrainHparams, *, net: NetSpec, cfg: TrainConfig) -> TrainResult:
  """The whole training of one network as one pure function: ``lax.scan`` of :func:`_segment_one` over the gaps
  between the measurement epochs."""
  carry, fixed = _init_one(key, hp, net=net, cfg=cfg)
  seg = lambda c, n: _segment_one(c, fixed, n, data, hp, net=net, cfg=cfg)
  carry, outs = jax.lax.scan(seg, carry, jnp.asarray(_gaps(cfg)))
  return _result(carry, fixed, outs)


#: XLA options for programs that run once (measurements) or briefly (``fast_compile``): the backend's optimisation
#: level 0 compiles a training program 3-4x faster and runs it about 2x slower (measured on a 2-core CPU).
_FAST = {"xla_backend_optimization_level": 0}


def _train_impl(key, data, hp, *, net, cfg, batched):
  fn = functools.partial(_train_one, net=net, cfg=cfg)
  if batched:
    return jax.vmap(fn, in_axes=(0, None, None))(key, data, hp)
  return fn(key, data, hp)


def _init_impl(key, hp, *, net, cfg, batched):
  fn = functools.partial(_init_one, net=net, cfg=cfg)
  return jax.vmap(fn, in_axes=(0, None))(key, hp) if batched else fn(key, hp)


def _segment_impl(carry, fixed, n_epochs, data, hp, *, net, cfg, batched):
  fn = functools.partial(_segment_one, net=net, cfg=cfg)
  if batched:
    return jax.vmap(fn, in_axes=(0, 0, None, None, None))(carry, fixed, n_epochs, data, hp)
  return fn(carry, fixed, n_epochs, data, hp)


_STATIC = ("net", "cfg", "batched")
_JIT = {fast: {name: jax.jit(f, static_argnames=_STATIC, **({"compiler_options": _FAST} if fast else {}))
               for name, f in (("train", _train_impl), ("init", _init_impl), ("segment", _segment_impl))}
        for fast in (False, True)}


def _check_data(data: Dataset, net: NetSpec, cfg: TrainConfig):
  if not isinstance(data, Dataset):
    raise ValueError(f"data is a {type(data).__name__}; allowed: a ufm.data.Dataset (see ufm.data)")
  if data.K != net.K:
    raise ValueError(f"data has K = {data.K} classes but net has K = {net.K}; allowed: the same K")
  shape = data.input_shape
  if net.arch == "mlp" and int(np.prod(shape)) != int(np.prod(net.input_shape)):
    raise ValueError(f"data inputs have shape {shape} but net.input_shape = {net.input_shape}; allowed: the "
                     "same number of input features")
  if net.arch == "cnn" and shape != net.input_shape:
    raise ValueError(f"data inputs have shape {shape} but net.input_shape = {net.input_shape}; allowed: the same")
  if cfg.batch_size > data.N:
    raise ValueError(f"batch_size = {cfg.batch_size} is out of range; allowed range: 1 <= batch_size <= N = {data.N}")


def train(key: jax.Array, data: Dataset, hparams: TrainHparams, *, net: NetSpec, config: TrainConfig,
          progress: bool | str = False) -> TrainResult:
  """Trains the network ``net`` on ``data`` (module docstring), measuring at ``config.epochs``.

  Args:
    key: a ``jax.random`` key, or a 1-D array of keys: one network per key, trained under ``vmap`` (the seed
      axis then leads every leaf of the result).
    data: a :class:`ufm.data.Dataset` (class-major training set; its dtype should be ``net.dtype``).
    hparams: :class:`TrainHparams` (:func:`train_hparams`).
    net: :class:`NetSpec` (:func:`mlp`, :func:`cnn`); static.
    config: :class:`TrainConfig` (:func:`train_config`); static.
    progress: a tqdm bar counting epochs (a string labels it). The training then runs as one jitted call per
      measurement segment (the same computation; the bar advances after each segment) instead of one program.

  Returns:
    :class:`TrainResult`. Deterministic for a key.

  Raises:
    ValueError: mismatched data and network, or a batch larger than the training set (before compiling).
  """
  _check_data(data, net, config)
  keys = jnp.asarray(key)
  if keys.ndim > 1:
    raise ValueError(f"key has shape {keys.shape}; allowed: one key, or a 1-D array of keys")
  dt = jnp.dtype(net.dtype)
  data = data.replace(X=jnp.asarray(data.X, dt), X_test=jnp.asarray(data.X_test, dt))
  hparams = TrainHparams(*(jnp.asarray(x, dt) for x in hparams))
  batched = keys.ndim == 1
  jits = _JIT[config.fast_compile]
  kw = dict(net=net, cfg=config, batched=batched)
  if not progress:  # one program: the whole training
    return jits["train"](keys, data, hparams, **kw)
  # With a bar: the same computation, one call per measurement segment (no host callbacks inside the program).
  from tqdm.auto import tqdm
  carry, fixed = jits["init"](keys, hparams, **kw)
  outs = []
  with tqdm(total=config.num_epochs, desc=progress if isinstance(progress, str) else "epochs", unit="epoch",
            leave=False) as bar:
    for gap in _gaps(config):
      carry, out = jits["segment"](carry, fixed, jnp.asarray(gap), data, hparams, **kw)
      jax.block_until_ready(out)
      bar.update(int(gap))
      outs.append(out)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1 if batched else 0), *outs)
  return _result(carry, fixed, stacked)


# ------------------------------------------------------------------------------------------ measurement

@functools.partial(jax.jit, static_argnames=("names",), compiler_options={"xla_backend_optimization_level": 0})
def _compute(params: Params, problem, names):
  return metrics.compute(params, problem, names)


def measure(features: ArrayLike, labels: ArrayLike, W: ArrayLike | None = None, b: ArrayLike | None = None, *,
            names=None) -> dict[str, float]:
  r"""Every NC metric of :data:`ufm.metrics.METRICS` on anyone's features, as floats.

  ``features`` are the penultimate features as rows (``N x d``, one per sample, any order), ``labels`` the
  integer classes ``0..K-1`` (every class present), ``W`` the classifier (``K x d``, logits ``W h + b``) and
  ``b`` its bias. Without ``W`` only the feature metrics :data:`LAYER_METRICS` are computed (so it also
  measures a hidden layer). The samples are sorted class-major (stably) and handed to
  :func:`ufm.metrics.compute` (normalisations: see :mod:`ufm.metrics`). Runs eagerly; not for use under jit.
  """
  H = np.asarray(features)
  y = np.asarray(labels)
  if H.ndim != 2:
    raise ValueError(f"features has shape {H.shape}; allowed: (N, d), one row per sample")
  if y.ndim != 1 or y.shape[0] != H.shape[0] or y.dtype.kind not in "iu":
    raise ValueError(f"labels has shape {y.shape} and dtype {y.dtype}; allowed: (N,) = ({H.shape[0]},) integers")
  if y.size == 0 or y.min() < 0:
    raise ValueError("labels: allowed: integer classes 0..K-1, at least one sample")
  K = int(y.max()) + 1 if W is None else int(np.shape(W)[0])
  counts = np.bincount(y, minlength=K)
  if K < 2 or np.any(counts == 0) or y.max() >= K:
    raise ValueError(f"labels cover classes {sorted(set(y.tolist()))[:12]}...; allowed: every class 0..K-1 = "
                     f"0..{K - 1} present (K = W.shape[0] when W is given), K >= 2")
  d = H.shape[1]
  if W is not None and np.shape(W) != (K, d):
    raise ValueError(f"W has shape {np.shape(W)}; allowed: (K, d) = ({K}, {d})")
  if b is not None and np.shape(b) != (K,):
    raise ValueError(f"b has shape {np.shape(b)}; allowed: (K,) = ({K},)")
  dt = jax.dtypes.canonicalize_dtype(H.dtype if H.dtype.kind == "f" else np.float64)  # float32 unless x64
  order = np.argsort(y, kind="stable")
  problem = make_problem(tuple(int(c) for c in counts), d=d, lam_W=0.0, lam_H=0.0, bias=b is not None, dtype=dt)
  Wj = jnp.zeros((K, d), dt) if W is None else jnp.asarray(W, dt)
  bj = jnp.zeros((K,), dt) if b is None else jnp.asarray(b, dt)
  names = (LAYER_METRICS if W is None else tuple(metrics.METRICS)) if names is None else tuple(names)
  out = _compute(Params(W=Wj, H=jnp.asarray(H[order].T, dt), b=bj), problem, names)
  return {k: float(v) for k, v in out.items()}


class Comparison(NamedTuple):
  """The network's measured geometry beside the UFM's prediction for the same ``K``, ``n_k`` and weight decays.

  Attributes:
    geometry, source: the predicted geometry and its source.
    lam_W, lam_H: the weight decays of the matching UFM; ``lam_H_from``: ``"given"`` or ``"balance"``.
    gram_W, pred_gram_W: :math:`WW^\\top` (``K x K``).
    gram_M, pred_gram_M: the class-mean Gram, centred (:math:`\\tilde M^\\top\\tilde M`) with a bias, uncentred
      (:math:`\\bar H^\\top\\bar H`) without.
    norms_W, pred_norms_W: the classifier row norms :math:`\\|w_k\\|` (``K``).
    norm_W_sq, pred_norm_W_sq, norm_H_sq, pred_norm_H_sq: :math:`\\|W\\|_F^2` and :math:`\\|H\\|_F^2` (``H``
      centred with a bias).
    gram_W_distance, gram_M_distance: Frobenius distance of the normalised Grams
      (:func:`ufm.convex.gram_distance`).
    metrics, pred_metrics: the NC metrics (``names``) measured, and on the predicted minimiser (both with
      ``norm_H_sq``, centred with a bias).
  """
  geometry: str
  source: str
  lam_W: float
  lam_H: float
  lam_H_from: str
  gram_W: np.ndarray
  pred_gram_W: np.ndarray
  gram_M: np.ndarray
  pred_gram_M: np.ndarray
  norms_W: np.ndarray
  pred_norms_W: np.ndarray
  norm_W_sq: float
  pred_norm_W_sq: float
  norm_H_sq: float
  pred_norm_H_sq: float
  gram_W_distance: float
  gram_M_distance: float
  metrics: dict
  pred_metrics: dict


def _joint_factor(gram_W, gram_M, logits_M):
  """``W`` (``K x 2K``) and ``Hbar`` (``2K x K``) with ``WW^T``, ``Hbar^T Hbar``, ``W Hbar`` the given Grams:
  a square root of the joint PSD Gram of ``[W^T, Hbar]``."""
  K = gram_W.shape[0]
  G = np.block([[gram_W, logits_M], [logits_M.T, gram_M]])
  w, V = np.linalg.eigh(0.5 * (G + G.T))
  w = np.where(w > 64 * np.finfo(np.float64).eps * np.max(np.abs(w)), w, 0.0)  # rounding noise of zeros -> 0
  F = (V * np.sqrt(w)[None, :]).T  # F^T F = G
  return F[:, :K].T, F[:, K:]


def compare_with_ufm(W: ArrayLike, features: ArrayLike, b: ArrayLike | None, counts, *, loss: str, lam_W,
                     lam_H=None, names=None) -> Comparison:
  r"""The UFM's predicted geometry for the network's ``K``, ``n_k`` and weight decays, beside the measured one.

  Builds ``ufm.make_problem(counts, d=2K, lam_W, lam_H, loss, bias=b is not None)`` (``lam_b = 0``: the
  network's classifier bias is not decayed) and takes its global minimiser from :func:`ufm.theory.predict`
  (balanced CE: simplex ETF, Zhu et al. 2021 Thm. 3.1; MSE: orthogonal frame / general orthogonal frame without
  bias, Tirer & Bruna 2022, Dang et al. 2023; ETF with a bias, Zhou et al. 2022), or for imbalanced CE from the
  convex reference :func:`ufm.convex.ce_convex` (whose limits are minority collapse, Fang et al. 2021, and SELI,
  Thrampoulidis et al. 2022). The prediction's metrics are computed by :mod:`ufm.metrics` on a minimiser rebuilt
  from its Grams (``d = 2K``; every metric is rotation invariant).

  *Effective feature decay.* The network has no free features, so ``lam_H`` is not a knob of it unless an
  explicit feature decay was trained with. ``lam_H=None`` takes the value that satisfies the UFM's balance
  identity at the network's own ``(W, H)``: every stationary point of the UFM has
  :math:`\lambda_W\|W\|_F^2 = \lambda_H\|H\|_F^2` (from :math:`W^\top\nabla_W f = \nabla_H f\, H^\top`, whose
  loss terms are both :math:`\frac1N\mathrm{tr}(W^\top G H^\top)`), so
  :math:`\lambda_H^{\mathrm{eff}} = \lambda_W\|W\|_F^2/\|H\|_F^2` (``H`` centred when there is a bias: with a
  free bias the UFM's features have zero mean). The predicted norms are then a genuine test: the UFM fixes
  :math:`\|W\|_F^2` from the loss at that ratio.

  Args:
    W: the trained classifier ``K x d``.
    features: penultimate training features ``N x d``, rows class-major with ``counts`` (as
      :class:`ufm.data.Dataset` holds them).
    b: the classifier bias, or ``None`` for a bias-free classifier.
    counts: the training counts ``n_k``.
    loss: ``"ce"`` or ``"mse"``.
    lam_W: the classifier's weight decay ``> 0``; ``lam_H``: ``> 0`` or ``None`` (balance estimate).
    names: the NC metrics to compare (default: all of :data:`ufm.metrics.METRICS`).

  Raises:
    ValueError: bad shapes or decays; :class:`ufm.theory.NoClosedFormError` where no prediction exists.
  """
  W = np.asarray(W, np.float64)
  Hn = np.asarray(features, np.float64)
  counts = tuple(int(c) for c in counts)
  K, N = len(counts), sum(counts)
  if W.ndim != 2 or W.shape[0] != K or Hn.shape != (N, W.shape[1]):
    raise ValueError(f"W {W.shape}, features {Hn.shape}, counts (K = {K}, N = {N}); allowed: W (K, d), "
                     "features (N, d)")
  bias = b is not None
  lam_W = float(check_real("lam_W", lam_W, lo=0.0, lo_open=True))
  labels = np.repeat(np.arange(K), counts)
  H = Hn.T
  Hc = H - H.mean(axis=1, keepdims=True) if bias else H
  lam_H_from = "given"
  if lam_H is None:
    lam_H, lam_H_from = lam_W * float(np.sum(W**2)) / float(np.sum(Hc**2)), "balance"
  lam_H = float(check_real("lam_H", lam_H, lo=0.0, lo_open=True))
  f64 = jax.dtypes.canonicalize_dtype(np.float64)  # float64 under jax_enable_x64 (recommended), else float32
  problem = make_problem(counts, d=2 * K, lam_W=lam_W, lam_H=lam_H, loss=loss, bias=bias, dtype=f64)
  if loss == "ce" and len(set(counts)) > 1:
    sol = jax.tree.map(lambda x: np.asarray(x, np.float64),
                       convex.ce_convex(np.asarray(counts, np.float64), lam_W, lam_H, bias=bias, dtype=f64))
    if not bool(sol.converged):
      raise theory.NoClosedFormError(f"the convex reference did not converge (kkt = {float(sol.kkt):.2g})")
    pred_gram_W = np.asarray(convex.classifier_gram(sol.X, lam_W, lam_H))
    pred_gram_M = np.asarray(convex.feature_mean_gram(sol.X, np.asarray(counts, np.float64), lam_W, lam_H))
    logits_M, pred_b = np.asarray(sol.Z), np.asarray(sol.b)
    geometry = "imbalanced CE (convex reference)"
    source = "ufm.convex.ce_convex: convex reformulation of the CE-UFM (Hong & Ling 2023 form)"
  else:
    p = theory.predict(problem)
    pred_gram_W, pred_gram_M, logits_M = (np.asarray(x, np.float64) for x in (p.gram_W, p.gram_M, p.logits_M))
    pred_b = np.nan_to_num(np.asarray(p.b, np.float64))
    geometry, source = p.geometry, p.source
  Wp, Hbar = _joint_factor(pred_gram_W, pred_gram_M, logits_M)
  d = W.shape[1]
  if d > 2 * K:  # zero-pad the minimiser to the network's width: one compiled metrics program measures both
    Wp, Hbar = np.pad(Wp, ((0, 0), (0, d - 2 * K))), np.pad(Hbar, ((0, d - 2 * K), (0, 0)))
  Y = np.eye(K)[:, labels]
  names = tuple(metrics.METRICS) if names is None else tuple(names)
  pp = Params(W=jnp.asarray(Wp, f64), H=jnp.asarray(Hbar @ Y, f64), b=jnp.asarray(pred_b, f64))
  pred_metrics = {k: float(v) for k, v in _compute(pp, problem, names).items()}
  pred_H = Hbar @ Y - (Hbar @ Y).mean(1, keepdims=True) if bias else Hbar @ Y
  pred_metrics["norm_H_sq"] = float(np.sum(pred_H**2))
  Mbar = np.stack([H[:, labels == k].mean(axis=1) for k in range(K)], axis=1)
  M = Mbar - H.mean(axis=1, keepdims=True) if bias else Mbar
  pred_M = Hbar - (Hbar @ Y).mean(axis=1, keepdims=True) if bias else Hbar
  gram_W, gram_M = W @ W.T, M.T @ M
  pg_M = pred_M.T @ pred_M
  measured = measure(Hn, labels, W, None if b is None else np.asarray(b, np.float64), names=names)
  measured["norm_H_sq"] = float(np.sum(Hc**2))
  dist = lambda G, T: float(np.linalg.norm(G / np.linalg.norm(G) - T / np.linalg.norm(T)))  # convex.gram_distance
  return Comparison(geometry=geometry, source=source, lam_W=lam_W, lam_H=lam_H, lam_H_from=lam_H_from,
                    gram_W=gram_W, pred_gram_W=pred_gram_W, gram_M=gram_M, pred_gram_M=pg_M,
                    norms_W=np.linalg.norm(W, axis=1), pred_norms_W=np.sqrt(np.maximum(np.diag(pred_gram_W), 0.0)),
                    norm_W_sq=float(np.sum(W**2)), pred_norm_W_sq=float(np.trace(pred_gram_W)),
                    norm_H_sq=measured["norm_H_sq"], pred_norm_H_sq=pred_metrics["norm_H_sq"],
                    gram_W_distance=dist(gram_W, pred_gram_W), gram_M_distance=dist(gram_M, pg_M),
                    metrics=measured, pred_metrics=pred_metrics)
