r"""Datasets for training real networks: scikit-learn's digits, Gaussian mixtures, and a user's ``.npz`` arrays.

A :class:`Dataset` holds a training set sorted **class-major** (all samples of class 0, then class 1, ...),
so that its labels are exactly :func:`ufm.problem.make_labels` of its ``counts`` and a network's training
features can be handed to :mod:`ufm.metrics` as the ``H`` of a :class:`ufm.problem.Problem` with the same
counts; and a (balanced, unsorted) test set. Inputs are float arrays with a leading sample axis
(``(N, 64)`` vectors or ``(N, 8, 8, 1)`` images for digits).

* :func:`digits`: the 1 797 handwritten digits that ship with scikit-learn (``sklearn.datasets.load_digits``,
  8 x 8 grey levels 0..16, K = 10, 174--183 images per class; no download). A fixed number of images per class
  is held out as the test set, and the training set is subsampled to any per-class counts: balanced
  (:func:`ufm.problem.balanced_counts`), step (:func:`ufm.problem.step_counts`) or long-tailed
  (:func:`ufm.problem.long_tailed_counts`).
* :func:`gaussian_mixture`: K isotropic Gaussian classes in ``R^D`` with random means.
* :func:`load_npz`: a user's own arrays (``X``, ``y`` and optionally ``X_test``, ``y_test``), validated with
  errors that name the offending key, shape or label.

Randomness: every sampler takes a ``jax.random`` key as its first argument; nothing uses
NumPy's global generator. Everything is validated in Python and returns NumPy-backed JAX arrays.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ufm.problem import ClassCounts
from ufm.validate import check_counts, check_dtype, check_int, check_real

__all__ = ["Dataset", "DIGITS_K", "DIGITS_MAX_TRAIN", "digits", "gaussian_mixture", "load_npz", "make_dataset",
           "subsample"]

#: Classes of the digits set.
DIGITS_K = 10
#: Images per class available for training after the default 50 test images per class (smallest class: 174).
DIGITS_MAX_TRAIN = 124


@struct.dataclass
class Dataset(ClassCounts):
  """A training set sorted class-major and a test set (``K``, ``N``, ``balanced``, ``n`` from ``counts``).

  Attributes:
    X: training inputs, ``(N, ...)``, rows grouped by class in class order.
    y: training labels ``(N,)`` (int32), equal to ``repeat(arange(K), counts)``.
    X_test, y_test: test inputs and labels (any order; may have 0 rows).
    counts: per-class training counts ``(n_1, ..., n_K)`` (static).
  """
  X: Any
  y: Any
  X_test: Any
  y_test: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.X.shape[1:])


def _check_labels(name: str, y, K: int | None = None) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"{name} has shape {y.shape}; allowed: a 1-D array of integer class labels (N,)")
  if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
    y = y.astype(np.int64)  # integral floats, as np.savetxt/loadtxt round trips produce
  if y.dtype.kind not in "iu":
    raise ValueError(f"{name} has dtype {y.dtype}; allowed: integer class labels 0..K-1")
  if y.size and y.min() < 0:
    raise ValueError(f"{name} contains the label {int(y.min())}; allowed: integer class labels 0..K-1")
  if K is not None and y.size and y.max() >= K:
    raise ValueError(f"{name} contains the label {int(y.max())}; allowed: 0..K-1 = 0..{K - 1} "
                     "(K from the training labels)")
  return y.astype(np.int64)


def _check_inputs(name: str, X, n: int, label_name: str) -> np.ndarray:
  X = np.asarray(X)
  if X.dtype.kind not in "fiub":
    raise ValueError(f"{name} has dtype {X.dtype}; allowed: real numbers")
  if X.ndim < 2:
    raise ValueError(f"{name} has shape {X.shape}; allowed: (N, ...) with a leading sample axis and at least one "
                     "feature axis")
  if X.shape[0] != n:
    raise ValueError(f"{name} has {X.shape[0]} rows but {label_name} has {n} labels; allowed: one row per label")
  if not np.all(np.isfinite(X)):
    raise ValueError(f"{name} contains NaN or inf; allowed: finite values")
  return X


def make_dataset(X, y, X_test=None, y_test=None, *, K: int | None = None, dtype=jnp.float32) -> Dataset:
  """A :class:`Dataset` from arrays: validates them, sorts the training set class-major (stably).

  Args:
    X, y: training inputs ``(N, ...)`` and integer labels ``(N,)`` in ``0..K-1``; every class must occur.
    X_test, y_test: optional test set (same trailing shape as ``X``).
    K: number of classes (default ``max(y) + 1``).
    dtype: floating dtype of the inputs.

  Raises:
    ValueError: naming the bad array, its shape or the bad label.
  """
  dt = check_dtype(dtype)
  y = _check_labels("y", y)
  X = _check_inputs("X", X, y.shape[0], "y")
  if y.size == 0:
    raise ValueError("y is empty; allowed: at least one sample of each of K >= 2 classes")
  K = int(y.max()) + 1 if K is None else check_int("K", K, lo=2)
  y = _check_labels("y", y, K)
  counts = np.bincount(y, minlength=K)
  if K < 2 or np.any(counts == 0):
    missing = np.flatnonzero(counts == 0).tolist()
    raise ValueError(f"y has K = {K} classes but class(es) {missing} have no sample; allowed: every class "
                     "0..K-1 present, K >= 2")
  if (X_test is None) != (y_test is None):
    raise ValueError("X_test and y_test: give both or neither")
  if X_test is None:
    X_test, y_test = np.zeros((0,) + X.shape[1:], X.dtype), np.zeros((0,), np.int64)
  y_test = _check_labels("y_test", y_test, K)
  X_test = _check_inputs("X_test", X_test, y_test.shape[0], "y_test")
  if X_test.shape[1:] != X.shape[1:]:
    raise ValueError(f"X_test has sample shape {X_test.shape[1:]} but X has {X.shape[1:]}; allowed: the same "
                     "sample shape")
  order = np.argsort(y, kind="stable")
  return Dataset(X=jnp.asarray(X[order], dt), y=jnp.asarray(y[order], jnp.int32), X_test=jnp.asarray(X_test, dt),
                 y_test=jnp.asarray(y_test, jnp.int32), counts=tuple(int(c) for c in counts))


def load_npz(path: str | os.PathLike, *, K: int | None = None, dtype=jnp.float32) -> Dataset:
  """A user's own data from a NumPy ``.npz`` file, as a :class:`Dataset`.

  The file must hold ``X`` (``(N, ...)`` real inputs) and ``y`` (``(N,)`` integer labels ``0..K-1``, every
  class present), and may hold ``X_test`` and ``y_test``. Opened with ``allow_pickle=False``. Example::

    np.savez("mine.npz", X=features, y=labels)     # features (N, D), labels (N,)
    data = ufm.data.load_npz("mine.npz")

  Raises:
    ValueError: a missing file or key (listing the keys found), an unknown key, or bad shapes or labels
      (naming the key).
  """
  try:
    with open(path, "rb") as f:
      magic = f.read(4)
  except FileNotFoundError:
    raise ValueError(f"path = {str(path)!r}: no such file") from None
  if magic != b"PK\x03\x04":  # an .npz is a zip archive
    raise ValueError(f"path = {str(path)!r} is not a NumPy .npz file (not a zip archive); allowed: a file written "
                     "by np.savez with keys X, y")
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except FileNotFoundError:
    raise ValueError(f"path = {str(path)!r}: no such file") from None
  except ValueError as e:  # object arrays need pickle: refused
    raise ValueError(f"path = {str(path)!r}: unreadable without pickle ({e}); allowed: numeric arrays") from None
  except Exception as e:  # noqa: BLE001 -- not a zip / not an npz
    raise ValueError(f"path = {str(path)!r} is not a NumPy .npz file ({type(e).__name__}: {e})") from None
  allowed = ("X", "y", "X_test", "y_test")
  missing = [k for k in ("X", "y") if k not in arrays]
  if missing:
    raise ValueError(f"{str(path)!r} has no key(s) {missing}; found {sorted(arrays)}; required: X (N, ...), "
                     "y (N,); optional: X_test, y_test")
  unknown = sorted(set(arrays) - set(allowed))
  if unknown:
    raise ValueError(f"{str(path)!r} has unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}")
  return make_dataset(arrays["X"], arrays["y"], arrays.get("X_test"), arrays.get("y_test"), K=K, dtype=dtype)


def subsample(key: jax.Array, y, counts) -> np.ndarray:
  """Indices of a class-major subsample with ``counts[k]`` samples of class ``k``, drawn without replacement.

  Raises ``ValueError`` when a class has fewer samples than asked for.
  """
  counts = check_counts(counts)
  y = _check_labels("y", y)
  # One uniform draw per sample (one program whatever the class sizes); sorting a class's draws permutes it.
  u = np.asarray(jax.random.uniform(key, (y.shape[0],), jnp.float32))
  idx = []
  for k, n_k in enumerate(counts):
    pool = np.flatnonzero(y == k)
    if n_k > pool.size:
      raise ValueError(f"counts[{k}] = {n_k} is out of range; allowed range: 1 <= counts[{k}] <= {pool.size} "
                       f"(samples of class {k})")
    idx.append(np.sort(pool[np.argsort(u[pool], kind="stable")[:n_k]]))
  return np.concatenate(idx)


def digits(key: jax.Array, counts=None, *, test_per_class: int = 50, image: bool = False,
           dtype=jnp.float32) -> Dataset:
  r"""scikit-learn's handwritten digits (1 797 images, 8 x 8, K = 10), split and subsampled.

  ``test_per_class`` images of every class are held out (drawn with the first half of ``split(key)``); the
  training set is
  drawn from the rest (second half) with ``counts`` (default: all of it, balanced to the smallest class,
  ``174 - test_per_class`` per class), class-major. Pixels are scaled to :math:`[0, 1]` (grey level / 16)
  and centred by the training mean pixel. ``image=True`` gives ``(N, 8, 8, 1)`` arrays (for a CNN),
  else ``(N, 64)``.

  Args:
    key: a ``jax.random`` key.
    counts: per-class training counts (``K = 10`` entries, each ``<= 174 - test_per_class``), e.g.
      ``ufm.step_counts(10, K_major=5, n_major=120, rho=10)``.
    test_per_class: held-out images per class, ``0 <= test_per_class <= 173``.
    image: image-shaped inputs.
    dtype: floating dtype of the inputs.
  """
  from sklearn.datasets import load_digits  # lazy: only this loader needs scikit-learn
  dt = check_dtype(dtype)
  test_per_class = check_int("test_per_class", test_per_class, lo=0)
  bunch = load_digits()
  X_all, y_all = bunch.images.astype(np.float64) / 16.0, bunch.target.astype(np.int64)
  per_class = np.bincount(y_all, minlength=DIGITS_K)
  if test_per_class >= per_class.min():
    raise ValueError(f"test_per_class = {test_per_class} is out of range; allowed range: 0 <= test_per_class <= "
                     f"{per_class.min() - 1}")
  k_test, k_train = jax.random.split(key)
  test_idx = subsample(k_test, y_all, (test_per_class,) * DIGITS_K) if test_per_class else np.zeros(0, int)
  rest = np.setdiff1d(np.arange(y_all.size), test_idx)
  avail = per_class - test_per_class
  if counts is None:
    counts = (int(avail.min()),) * DIGITS_K
  counts = check_counts(counts)
  if len(counts) != DIGITS_K:
    raise ValueError(f"counts has {len(counts)} entries; allowed: K = {DIGITS_K} (the digit classes)")
  for k, c in enumerate(counts):
    if c > avail[k]:
      raise ValueError(f"counts[{k}] = {c} is out of range; allowed range: 1 <= counts[{k}] <= {int(avail[k])} "
                       f"(class {k} has {int(per_class[k])} images, {test_per_class} held out)")
  train_idx = rest[subsample(k_train, y_all[rest], counts)]
  X, y, X_te, y_te = X_all[train_idx], y_all[train_idx], X_all[test_idx], y_all[test_idx]
  mean = X.mean(axis=0, keepdims=True)
  X, X_te = X - mean, X_te - mean
  shape = (8, 8, 1) if image else (64,)
  return make_dataset(X.reshape((-1,) + shape), y, X_te.reshape((-1,) + shape), y_te, K=DIGITS_K, dtype=dt)


def gaussian_mixture(key: jax.Array, counts, *, dim: int, separation=1.0, noise=1.0, test_per_class: int = 0,
                     dtype=jnp.float32) -> Dataset:
  r"""K isotropic Gaussian classes: :math:`x_{k,i} = \mu_k + \sigma\,\epsilon_{k,i}`, :math:`\epsilon \sim N(0, I_D)`.

  The means are :math:`\mu_k = s\,g_k/\sqrt D` with :math:`g_k \sim N(0, I_D)` (so
  :math:`\mathbb E\|\mu_k\|^2 = s^2`), ``s = separation``, :math:`\sigma` = ``noise``; the means, training
  noise and test noise are consecutive rows of one standard normal draw from ``key``.

  Args:
    key: a ``jax.random`` key.
    counts: per-class training counts (``K >= 2``).
    dim: input dimension ``D >= 1``.
    separation, noise: ``s >= 0``, :math:`\sigma >= 0`.
    test_per_class: test samples per class.
    dtype: floating dtype.
  """
  counts = check_counts(counts)
  dim = check_int("dim", dim, lo=1)
  s = float(check_real("separation", separation, lo=0.0))
  sigma = float(check_real("noise", noise, lo=0.0))
  test_per_class = check_int("test_per_class", test_per_class, lo=0)
  dt = check_dtype(dtype)
  K = len(counts)
  y = np.repeat(np.arange(K), counts)
  y_te = np.repeat(np.arange(K), test_per_class)
  # One float32 draw (one program, the same numbers with or without x64), split into means, train and test noise.
  g = np.asarray(jax.random.normal(key, (K + y.size + y_te.size, dim), jnp.float32), np.float64)
  mu, eps, eps_te = s * g[:K] / np.sqrt(dim), g[K:K + y.size], g[K + y.size:]
  return make_dataset(mu[y] + sigma * eps, y, mu[y_te] + sigma * eps_te, y_te, K=K, dtype=dt)
