r"""Training a network as one jitted program: hyperparameters, static configuration, the vmapped training loop.

The objective (the UFM's normalisation, :mod:`ufm.objectives`, on a mini-batch ``B`` of the ``N`` training
samples):

.. math::
   \frac1{|B|}\sum_{i\in B} \ell(W h_\theta(x_i) + b, y_i)
   + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_\theta}{2}\|\theta\|^2
   + \frac{\lambda_H}{2}\,\frac{N}{|B|}\sum_{i\in B}\|h_\theta(x_i)\|^2 ,

with :math:`\ell` the loss ``config.loss`` of :mod:`ufm.losses` (softmax cross-entropy ``"ce"``,
:math:`\frac12\|z - y\|^2` ``"mse"``, or any registered loss), :math:`\theta` the hidden layers' parameters
(weight decay ``weight_decay``), ``lam_W`` the classifier's decay and ``lam_H`` an optional explicit feature decay,
scaled so that the last term is an unbiased estimate of the UFM's :math:`\frac{\lambda_H}{2}\|H\|_F^2` over all
``N`` samples (the "separate decay" of Zhu et al. 2021, arXiv 2105.02375, ``--sep_decay``). The classifier's bias
is not decayed (:math:`\lambda_b = 0`). Optional label smoothing (targets :math:`(1-\epsilon)e_y + \epsilon/K`)
and mixup (Zhang et al. 2018, arXiv 1710.09412: per-example :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`,
partners a random permutation of the batch, targets :math:`\lambda y + (1 - \lambda) y'`).

:func:`train` is one pure, jitted program: the module is split into its graph and its state (``nnx.split``) at the
``jit`` boundary and merged (``nnx.merge``) inside the loss; epochs run in a ``lax`` loop and mini-batches in
``lax.scan``; SGD with momentum (heavy ball) or Adam (optax), with a constant, step (:math:`\div 10` at 1/3 and 2/3
of training, Papyan et al. 2020) or cosine learning rate. A 1-D array of keys trains one network per key under
``vmap`` (the seed axis leads every result). At the epochs of :attr:`TrainConfig.epochs` it measures every metric
of :data:`ufm.metrics.METRICS` on the penultimate features with the classifier, the feature metrics
:data:`ufm.networks.LAYER_METRICS` on every hidden layer, and train/test loss and accuracy.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ufm import losses
from ufm import metrics as _metrics_mod  # train_config's argument is named metrics
from ufm.data import Dataset
from ufm.networks.measurement import LAYER_METRICS
from ufm.networks.models import NetSpec, build, check_bool, graphdef, net_inputs, split_state
from ufm.problem import Params, make_problem
from ufm.solvers import blown_up
from ufm.validate import check_dtype, check_int, check_loss, check_real

__all__ = ["NetTrace", "TrainConfig", "TrainHparams", "TrainResult", "log_epochs", "train", "train_config",
           "train_hparams"]


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
    """The length of training: the last measurement epoch."""
    return self.epochs[-1]


def log_epochs(num_epochs: int, num_points: int) -> tuple[int, ...]:
  """About ``num_points`` distinct epochs from 0 to ``num_epochs``, log-spaced (0, 1, 2, ..., ``num_epochs``)."""
  num_epochs, num_points = check_int("num_epochs", num_epochs, lo=1), check_int("num_points", num_points, lo=2)
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
  loss = check_loss(loss)
  if optimizer not in ("sgd", "adam"):
    raise ValueError(f"optimizer = {optimizer!r} is not supported; allowed values: sgd, adam")
  if lr_schedule not in ("constant", "step", "cosine"):
    raise ValueError(f"lr_schedule = {lr_schedule!r} is not supported; allowed values: constant, step, cosine")
  batch_size = check_int("batch_size", batch_size, lo=1)
  ep = tuple(check_int(f"epochs[{i}]", e, lo=0) for i, e in enumerate(epochs))
  if not ep or any(b <= a for a, b in zip(ep, ep[1:])) or ep[-1] < 1:
    raise ValueError(f"epochs = {epochs!r}; allowed: a strictly increasing tuple of integers >= 0 ending >= 1")
  return TrainConfig(loss, optimizer, batch_size, ep, lr_schedule, check_bool("mixup", mixup), names, layer_names,
                     check_bool("fast_compile", fast_compile))


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
  :class:`NetTrace`; ``diverged``: a non-finite objective at some measurement, or one above
  :data:`ufm.solvers.DIVERGENCE_RATIO` times the first measured (flagged, never raised)."""
  state: Any
  trace: NetTrace
  diverged: jax.Array


def _targets(cfg: TrainConfig, hp: TrainHparams, y, K, dtype):
  onehot = jax.nn.one_hot(y, K, dtype=dtype)
  return (1 - hp.label_smoothing) * onehot + hp.label_smoothing / K


def _loss(cfg: TrainConfig, logits, targets):
  """Per-sample loss ``config.loss`` of :mod:`ufm.losses` against (soft) targets, class axis last: ``(N,)``."""
  return losses.get(cfg.loss).per_sample(logits, targets)


def _sq(tree):
  return sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))


def _objective(trainable, fixed, xb, tb, hp: TrainHparams, *, net: NetSpec, cfg: TrainConfig, N: int):
  model = nnx.merge(graphdef(net), *trainable, fixed)
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
  model = nnx.merge(graphdef(net), *trainable, fixed)
  dt = jnp.dtype(net.dtype)
  X = net_inputs(net, data.X)
  hs = model.features(X)
  logits = model.classifier(hs[-1])
  K = net.K
  t = _targets(cfg, hp, data.y, K, dt)
  train_loss = jnp.mean(_loss(cfg, logits, t))
  train_acc = jnp.mean((jnp.argmax(logits, -1) == data.y).astype(dt))
  if data.X_test.shape[0]:
    lt = model(net_inputs(net, data.X_test))
    test_loss = jnp.mean(_loss(cfg, lt, _targets(cfg, hp, data.y_test, K, dt)))
    test_acc = jnp.mean((jnp.argmax(lt, -1) == data.y_test).astype(dt))
  else:
    test_loss = test_acc = jnp.full((), jnp.nan, dt)
  W, b = model.classifier.W[...], model.classifier.b[...]
  objective = train_loss + 0.5 * hp.lam_W * _sq(trainable[0]) + 0.5 * hp.weight_decay * _sq(trainable[2]) + (
      0.5 * hp.lam_H * jnp.sum(hs[-1] ** 2))
  problem = make_problem(data.counts, d=net.width, lam_W=0.0, lam_H=0.0, loss=cfg.loss, bias=net.bias, dtype=dt)
  m = _metrics_mod.compute(Params(W=W, H=hs[-1].T, b=b), problem, cfg.metrics)
  layer_fn = lambda H: _metrics_mod.compute(Params(W=jnp.zeros((K, H.shape[0]), dt), H=H, b=b), problem,
                                            cfg.layer_metrics)
  if len({h.shape[1] for h in hs}) == 1:  # equal widths (MLP): one vmapped program for all layers
    lm = jax.vmap(layer_fn)(jnp.stack([h.T for h in hs]))
  else:
    per_layer = [layer_fn(h.T) for h in hs]
    lm = {k: jnp.stack([p[k] for p in per_layer]) for k in cfg.layer_metrics}
  return train_loss, test_loss, train_acc, test_acc, objective, m, lm


def _init_one(key, hp: TrainHparams, *, net: NetSpec, cfg: TrainConfig):
  """The network's initial state: ``(carry, fixed)`` with ``carry = (trainable, optimiser state, epoch, key)``."""
  k_init, k_train = jax.random.split(key)
  _, trainable, fixed = split_state(build(k_init, net))
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
  X = net_inputs(net, data.X)
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
  diverged = jnp.any(blown_up(obj, obj[..., :1]), axis=-1)  # non-finite, or past DIVERGENCE_RATIO x the first
  return TrainResult(state=(carry[0], fixed), trace=trace, diverged=diverged)


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
