r"""Flax (``flax.nnx``) networks whose last layers the UFM models: MLP and CNN, a linear or fixed-ETF classifier.

:class:`MLP` (``depth`` hidden ReLU layers of ``width`` units) and :class:`CNN` (two 3x3 convolutions and a dense
layer) each end in a linear classifier :math:`z = W h + b` with ``W`` (``K x d``) stored in the UFM's orientation,
optionally a *fixed* simplex-ETF classifier (Fisher et al. 2024, arXiv 2402.06171, the classifier assumption of
their mixup UFM; Zhu et al. 2021, arXiv 2105.02375, Sec. 5) and optionally no bias. A network is described by a
hashable :class:`NetSpec` (:func:`mlp`, :func:`cnn`), built by :func:`build`; :func:`features` returns every hidden
layer's features, the logits and the classifier.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ufm import theory
from ufm.validate import check_dtype, check_int, check_real

__all__ = ["CNN", "Classifier", "ClassifierB", "ClassifierW", "Features", "Fixed", "MLP", "NetSpec", "build", "cnn",
           "features", "mlp"]


class Fixed(nnx.Variable):
  """A non-trainable variable (a fixed classifier, or the zero bias of a bias-free classifier)."""


class ClassifierW(nnx.Param):
  """The classifier ``W`` (``K x d``): decayed with ``lam_W``, not ``weight_decay``."""


class ClassifierB(nnx.Param):
  """The classifier bias ``b`` (``K``): not decayed."""


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


def check_bool(name: str, v) -> bool:
  """``v`` as a bool if it is one (Python or NumPy); ``ValueError`` naming ``name`` otherwise."""
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
  K, width, depth = check_int("K", K, lo=2), check_int("width", width, lo=1), check_int("depth", depth, lo=1)
  bias, fixed_etf = check_bool("bias", bias), check_bool("fixed_etf", fixed_etf)
  return NetSpec("mlp", shape, K, width, depth, 0, bias, fixed_etf, _check_etf(K, width, fixed_etf, etf_scale),
                 check_dtype(dtype).name)


def cnn(input_shape, K, *, channels=16, width=64, bias=True, fixed_etf=False, etf_scale=1.0,
        dtype=jnp.float32) -> NetSpec:
  """A :class:`CNN` spec for images ``input_shape = (H, W, C)``; the penultimate width is ``width``."""
  shape = tuple(int(s) for s in input_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"input_shape = {shape!r}; allowed: (H, W, C), each >= 1 (use image=True in ufm.data.digits)")
  K, width = check_int("K", K, lo=2), check_int("width", width, lo=1)
  channels = check_int("channels", channels, lo=1)
  bias, fixed_etf = check_bool("bias", bias), check_bool("fixed_etf", fixed_etf)
  return NetSpec("cnn", shape, K, width, 3, channels, bias, fixed_etf, _check_etf(K, width, fixed_etf, etf_scale),
                 check_dtype(dtype).name)


def build(key: jax.Array, net: NetSpec) -> nnx.Module:
  """The Flax module of ``net`` with parameters drawn from ``key``."""
  rngs = nnx.Rngs(params=key)
  kw = dict(bias=net.bias, fixed_etf=net.fixed_etf, etf_scale=net.etf_scale, dtype=jnp.dtype(net.dtype), rngs=rngs)
  if net.arch == "mlp":
    return MLP(int(np.prod(net.input_shape)), net.K, width=net.width, depth=net.depth, **kw)
  return CNN(net.input_shape, net.K, channels=net.channels, width=net.width, **kw)


def split_state(model):
  """``nnx.split`` of ``model`` into ``(graphdef, trainable, fixed)``: trainable = (classifier ``W``, classifier ``b``,
  hidden parameters), fixed = every non-trainable variable (a fixed classifier, a zero bias)."""
  gdef, W, b, hidden, fixed = nnx.split(model, ClassifierW, ClassifierB, nnx.Param, ...)
  return gdef, (W, b, hidden), fixed


@functools.lru_cache(maxsize=64)
def graphdef(net: NetSpec):
  """The (cached) graph definition of ``net``: the static half of ``nnx.split``, merged with a state inside jit."""
  return split_state(build(jax.random.key(0), net))[0]


def net_inputs(net: NetSpec, X):
  """Inputs as ``net`` takes them: flattened to ``(N, D)`` for an MLP, images ``(N, H, W, C)`` for a CNN."""
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

  ``state`` is :attr:`ufm.networks.TrainResult.state` of one network (index the seed axis first, or ``vmap``).
  """
  model = nnx.merge(graphdef(net), *state[0], state[1])
  hs = model.features(net_inputs(net, X))
  return Features(hidden=tuple(hs), logits=model.classifier(hs[-1]), W=model.classifier.W[...],
                  b=model.classifier.b[...])
