"""Streaming NC metrics (two passes over batches) equal the in-memory ones, and handle absent classes."""

import math

import jax
import numpy as np
import pytest

import ufm
from helpers import assert_close
from ufm import streaming
from ufm.networks import measure


def _data(counts=(50, 20, 5, 5, 3), d=7, spread=0.5, seed=0):
  rng = np.random.default_rng(seed)
  K = len(counts)
  y = np.repeat(np.arange(K), counts)
  H = rng.normal(size=(K, d))[y] + spread * rng.normal(size=(y.size, d)) + 3.0  # an offset, as real features have
  perm = rng.permutation(y.size)
  W, b = rng.normal(size=(K, d)), rng.normal(size=K)
  return H[perm], y[perm], W, b


def _batches(H, y, size):
  return lambda: ((H[i:i + size], y[i:i + size]) for i in range(0, len(y), size))


@pytest.mark.parametrize("batch", [1, 7, 64, 10_000])
def test_streamed_metrics_equal_the_in_memory_ones(batch):
  """Every metric of ufm.metrics.METRICS, imbalanced classes, shuffled rows, any batch size: equal to
  ufm.networks.measure on the whole array to the rounding of another summation order."""
  H, y, W, b = _data()
  dense = measure(H, y, W, b)
  got = streaming.measure_batches(_batches(H, y, batch), K=5, d=7, W=W, b=b)
  assert got["present"] == [0, 1, 2, 3, 4] and got["absent"] == [] and got["N"] == len(y)
  for name, value in dense.items():
    assert_close(got[name], value, "tiled", name)
  layer = streaming.measure_batches(_batches(H, y, batch), K=5, d=7)  # features only: the layer metrics
  assert set(k for k in layer if k not in ("present", "absent", "N")) == set(ufm.metrics.FEATURE_METRICS)


def test_absent_classes_are_left_out_and_named():
  """Class 2 never occurs: the metrics are those of the other classes, and the result says so."""
  H, y, W, b = _data()
  keep = y != 2
  H2, y2 = H[keep], y[keep]
  got = streaming.measure_batches(_batches(H2, y2, 16), K=5, d=7, W=W, b=b)
  assert got["present"] == [0, 1, 3, 4] and got["absent"] == [2]
  relabel = np.searchsorted([0, 1, 3, 4], y2)
  dense = measure(H2, relabel, W[[0, 1, 3, 4]], b[[0, 1, 3, 4]])
  for name in ("nc1", "nc1_ratio", "cdnv", "nc4", "etf_error_M", "equinorm_W", "self_duality"):
    assert_close(got[name], dense[name], "tiled", name)


def test_non_finite_batches_and_bad_input():
  H, y, W, b = _data()
  H = H.copy()
  H[3, 2] = np.nan
  got = streaming.measure_batches(_batches(H, y, 32), K=5, d=7, W=W, b=b)
  assert all(math.isnan(v) for k, v in got.items() if k not in ("present", "absent", "N"))
  acc = streaming.Accumulator(5, 7)
  with pytest.raises(ValueError, match="transposed"):
    acc.add_means(H[:5].T, y[:7])
  with pytest.raises(ValueError, match=r"allowed: integers in \[0, K\)"):
    acc.add_means(H[:3], np.array([0, 1, 5]))
  with pytest.raises(ValueError, match="no second pass"):
    acc.result()
  with pytest.raises(ValueError, match="W has shape"):
    streaming.Accumulator(5, 7, W=W.T)


def test_cli_measure_streams_a_file_and_refuses_bad_files_in_one_line(tmp_path, capsys):
  """``python -m ufm measure`` on a .npz (and on memory-mapped .npy files) gives measure()'s numbers; a missing
  --labels, a transposed array or a non-file exit 2 with one line."""
  import json

  from ufm import cli
  H, y, W, b = _data()
  np.savez(tmp_path / "f.npz", H=H, labels=y, W=W, b=b)
  assert cli.main(["measure", str(tmp_path / "f.npz"), "--batch", "16", "--json"]) == 0
  got = json.loads(capsys.readouterr().out)
  want = ufm.canonical.summary(H, y, W=W, b=b)  # the ufm preset: ufm.metrics' numbers (tests/test_conventions.py)
  assert got["conventions"] == "ufm"
  for name in ufm.canonical.SCALARS[:-1]:  # every name but nc5 (no OOD set here)
    assert_close(got[name], want[name], "tiled", name)
  np.save(tmp_path / "H.npy", H)
  np.save(tmp_path / "y.npy", y)
  np.save(tmp_path / "HT.npy", H.T)
  assert cli.main(["measure", str(tmp_path / "H.npy"), "--labels", str(tmp_path / "y.npy"), "--json"]) == 0
  assert_close(json.loads(capsys.readouterr().out)["nc1"], measure(H, y)["nc1"], "tiled")
  for argv, match in ((["measure", str(tmp_path / "H.npy")], "give --labels"),
                      (["measure", str(tmp_path / "HT.npy"), "--labels", str(tmp_path / "y.npy")], "transposed"),
                      (["measure", str(tmp_path / "nope.npz")], "is not a file")):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
