"""Fixtures for the golden values of the peer NC libraries: NumPy only, fixed seeds, float64.

Run ``python tests/golden/fixtures.py`` to (re)write ``fixtures.npz`` beside this file. Each fixture ``name`` holds
``name__H`` (``N x d``, one row per sample, rows shuffled), ``name__labels`` (``N``), ``name__W`` (``K x d``),
``name__b`` (``K``) and ``name__H_ood`` / ``name__labels_ood`` (an out-of-distribution set with balanced labels,
for NC5). The stored file, not this script, is what the tests and the golden script read: NumPy's random
streams are not promised to stay the same across versions.
"""

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).parent


def _simplex(K, d, rng):
  """A K-point simplex ETF in R^d (d >= K - 1): centred, unit-norm columns, random orientation."""
  E = np.eye(K) - 1.0 / K
  Q, _ = np.linalg.qr(rng.normal(size=(d, K)))
  U, _, _ = np.linalg.svd(E)
  basis = U[:, :K - 1]  # K x (K-1) orthonormal basis of the centred space
  X = Q[:, :K - 1] @ basis.T  # d x K
  return X / np.linalg.norm(X, axis=0)


def _case(counts, d, means, noise, W, rng, *, offset=0.0, exact_means=False):
  K = len(counts)
  y = np.repeat(np.arange(K), counts)
  Z = noise * rng.normal(size=(y.size, d))
  if exact_means:  # noise centred within each class: the empirical class means are the given ones (to rounding)
    Z -= np.stack([Z[y == k].mean(0) for k in range(K)])[y]
  H = means[y] + Z + offset
  perm = rng.permutation(y.size)
  ood_y = np.repeat(np.arange(4), 6)
  H_ood = rng.normal(size=(4, d))[ood_y] + 0.5 * rng.normal(size=(ood_y.size, d)) + 1.0
  return dict(H=H[perm], labels=y[perm], W=W, b=rng.normal(size=K), H_ood=H_ood, labels_ood=ood_y)


def make() -> dict:
  """The five fixtures: balanced, imbalanced, K > d, near collapse, rank-deficient Sigma_B."""
  rng = np.random.default_rng(20261205)
  out = {}
  K, d = 6, 8
  out["balanced"] = _case((10,) * K, d, 3.0 * rng.normal(size=(K, d)), 1.0, rng.normal(size=(K, d)), rng, offset=2.0)
  K, d = 5, 6
  out["imbalanced"] = _case((50, 20, 5, 5, 3), d, 2.0 * rng.normal(size=(K, d)), 1.0, rng.normal(size=(K, d)), rng)
  K, d = 12, 5
  out["k_gt_d"] = _case((6,) * K, d, 3.0 * rng.normal(size=(K, d)), 0.7, rng.normal(size=(K, d)), rng)
  K, d = 6, 10
  M = 4.0 * _simplex(K, d, rng).T + 1e-3 * rng.normal(size=(K, d))
  out["near_collapse"] = _case((8,) * K, d, M, 1e-4, 0.5 * M + 1e-3 * rng.normal(size=(K, d)), rng, offset=1.0)
  K, d = 6, 8
  plane = np.linalg.qr(rng.normal(size=(d, 2)))[0]  # d x 2: the class means span a plane, rank Sigma_B = 2 < K - 1
  out["rank_deficient"] = _case((9, 7, 8, 10, 6, 8), d, 3.0 * rng.normal(size=(K, 2)) @ plane.T, 1.0,
                                rng.normal(size=(K, d)), rng, exact_means=True)
  return out


def flat(cases: dict) -> dict:
  """``{name__array: array}`` for ``np.savez``."""
  return {f"{name}__{key}": value for name, arrays in cases.items() for key, value in arrays.items()}


def load(path=HERE / "fixtures.npz") -> dict:
  """``{name: {array: value}}`` from the stored file."""
  z = np.load(path, allow_pickle=False)
  cases: dict = {}
  for key in z.files:
    name, arr = key.split("__")
    cases.setdefault(name, {})[arr] = z[key]
  return cases


if __name__ == "__main__":
  np.savez(HERE / "fixtures.npz", **flat(make()))
  print(f"wrote {HERE / 'fixtures.npz'}")
