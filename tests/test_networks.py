"""ufm.networks: a tiny network collapses, training is deterministic and vmap == loop, the feature extractor feeds
ufm.metrics, and the UFM comparison recovers closed-form minimisers exactly.

Training runs in float32 (explicit dtypes; the suite enables x64 globally). The trained tiny network is shared
by the tests through a module fixture: two compiled programs in all (vmapped over 2 seeds, and one seed).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from helpers import assert_close, ce_minimiser_params
from ufm import data as D
from ufm import networks as nets

# A tiny separable problem: 3 Gaussian classes in R^8, 16 samples each; an MLP 8 -> 32 -> 32 -> 3, full-batch
# heavy-ball GD with an explicit feature decay (the UFM's lam_H). Measured: 100% train accuracy by epoch 100 and
# NC1 0.23 -> 0.0044 and 0.227 -> 0.0032 at epoch 300 (53x, 70x) for the two seeds.
NET = nets.mlp(8, 3, width=32, depth=2)
CFG = nets.train_config(loss="ce", batch_size=48, epochs=(0, 10, 100, 300), metrics=("nc1", "etf_error_M", "nc4"),
                        layer_metrics=("nc1",), fast_compile=True)  # XLA -O0: the same math, compiles 3-4x faster
HP = nets.train_hparams(0.05, weight_decay=1e-3, lam_H=1e-3)


@pytest.fixture(scope="module")
def tiny():
  data = D.gaussian_mixture(jax.random.key(0), (16,) * 3, dim=8, separation=3.0, noise=1.0)
  keys = jax.random.split(jax.random.key(1), 2)
  return data, keys, nets.train(keys, data, HP, net=NET, config=CFG)


def test_tiny_network_reaches_full_train_accuracy_and_nc1_falls_tenfold(tiny):
  _, _, res = tiny
  tr = res.trace
  assert tr.train_acc.dtype == jnp.float32 and tr.metrics["nc1"].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(tr.epoch), [[0, 10, 100, 300]] * 2)
  np.testing.assert_array_equal(np.asarray(tr.train_acc[:, -1]), [1.0, 1.0])
  nc1 = np.asarray(tr.metrics["nc1"])
  assert np.all(nc1[:, -1] <= nc1[:, 0] / 10), nc1
  assert not np.asarray(res.diverged).any()
  assert tr.layer_metrics["nc1"].shape == (2, 4, 2)  # (seed, epoch, layer)
  assert_close(np.asarray(tr.layer_metrics["nc1"][:, :, -1]), nc1, "float32")  # last layer = penultimate


def test_training_is_deterministic_for_a_seed_and_vmapped_seeds_equal_a_loop(tiny):
  data, keys, res = tiny
  again = nets.train(keys, data, HP, net=NET, config=CFG)  # same program, same key: bit for bit
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), res, again)
  assert all(jax.tree.leaves(same))
  for i in range(2):  # a Python loop over seeds (the unbatched program) agrees with the vmapped one
    one = nets.train(keys[i], data, HP, net=NET, config=CFG)
    for name in ("train_loss", "objective", "train_acc"):
      assert_close(np.asarray(getattr(one.trace, name)), np.asarray(getattr(res.trace, name)[i]), "float32_training",
                   name)
    assert_close(np.asarray(one.trace.metrics["nc1"]), np.asarray(res.trace.metrics["nc1"][i]), "float32_training")
    assert_close(np.asarray(jax.tree.leaves(one.state)[0]), np.asarray(jax.tree.leaves(res.state)[0][i]),
                 "float32_training")


def test_progress_bar_path_computes_the_same_training(tiny, capsys):
  """With a bar, training runs as one call per measurement segment instead of one program: the same numbers."""
  data, keys, res = tiny
  seg = nets.train(keys, data, HP, net=NET, config=CFG, progress="tiny")
  assert jax.tree.structure(seg) == jax.tree.structure(res)
  for a, b in zip(jax.tree.leaves(seg), jax.tree.leaves(res)):
    assert a.shape == b.shape and a.dtype == b.dtype
  np.testing.assert_array_equal(np.asarray(seg.trace.epoch), np.asarray(res.trace.epoch))
  assert_close(np.asarray(seg.trace.objective), np.asarray(res.trace.objective), "float32_training")
  assert_close(np.asarray(seg.trace.metrics["nc1"]), np.asarray(res.trace.metrics["nc1"]), "float32_training")


def test_feature_extractor_returns_what_the_metrics_expect(tiny):
  data, _, res = tiny
  state = jax.tree.map(lambda x: x[0], res.state)
  f = nets.features(NET, state, data.X)
  assert [h.shape for h in f.hidden] == [(48, 32), (48, 32)]
  assert f.logits.shape == (48, 3) and f.W.shape == (3, 32) and f.b.shape == (3,)
  np.testing.assert_allclose(np.asarray(f.logits), np.asarray(f.hidden[-1] @ f.W.T + f.b[None, :]), rtol=1e-5,
                             atol=1e-5)
  # the same numbers as the in-training measurement at the last epoch, through the public five-line path
  m = nets.measure(f.hidden[-1], data.y, f.W, f.b)
  assert set(m) == set(ufm.metrics.METRICS)
  assert_close(m["nc1"], float(res.trace.metrics["nc1"][0, -1]), "float32")
  assert_close(m["nc4"], float(res.trace.metrics["nc4"][0, -1]), "float32")
  hidden = nets.measure(f.hidden[0], data.y)  # a hidden layer, no classifier
  assert set(hidden) == set(nets.LAYER_METRICS)
  assert_close(hidden["nc1"], float(res.trace.layer_metrics["nc1"][0, -1, 0]), "float32")
  # permuting the samples (with their labels) changes nothing
  perm = np.random.default_rng(0).permutation(48)
  m2 = nets.measure(np.asarray(f.hidden[-1])[perm], np.asarray(data.y)[perm], f.W, f.b)
  assert_close(m2["nc1"], m["nc1"], "float32")


def test_cnn_and_fixed_etf_classifier_shapes_and_frozen_parts(getkey):
  net = nets.cnn((8, 8, 1), 10, channels=4, width=16, fixed_etf=True, etf_scale=2.0, bias=False)
  model = nets.build(getkey(), net)
  _, trainable, fixed = nets.models.split_state(model)
  W, b, _ = trainable
  assert not jax.tree.leaves(W) and not jax.tree.leaves(b)  # the ETF and the zero bias are not trained
  f = jax.eval_shape(lambda s, x: nets.features(net, s, x), (trainable, fixed), jnp.ones((5, 8, 8, 1), jnp.float32))
  assert [h.shape for h in f.hidden] == [(5, 256), (5, 128), (5, 16)] and f.logits.shape == (5, 10)
  W_fixed = np.asarray(model.classifier.W[...], np.float64)
  np.testing.assert_allclose(W_fixed @ W_fixed.T, 4.0 * np.asarray(ufm.theory.etf_gram(10)), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(model.classifier.b[...]), np.zeros(10))


@pytest.mark.parametrize("call, match", [
    (lambda: nets.mlp(8, 3, width=0), "width = 0 is out of range"),
    (lambda: nets.mlp(8, 10, width=4, fixed_etf=True), "allowed range: width >= K-1 = 9"),
    (lambda: nets.cnn((8, 8), 3), r"input_shape = \(8, 8\); allowed: \(H, W, C\)"),
    (lambda: nets.train_config(loss="hinge"), "loss = 'hinge' is not supported"),
    (lambda: nets.train_config(epochs=(0, 5, 5)), "strictly increasing"),
    (lambda: nets.train_config(metrics=("nc9",)), "metrics = .*allowed: distinct names"),
    (lambda: nets.train_hparams(lr=0.0), "lr = 0.0 is out of range"),
    (lambda: nets.train_hparams(momentum=1.0), "momentum = 1.0 is out of range"),
    (lambda: nets.measure(np.ones((4, 2)), np.array([0, 0, 2, 2])), r"every class 0..K-1 = 0..2 present"),
    (lambda: nets.measure(np.ones((4, 2)), np.array([0, 1, 0, 1]), W=np.ones((2, 3))), r"W has shape \(2, 3\)"),
])
def test_bad_arguments_are_refused_before_compiling(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_train_refuses_mismatched_data(getkey):
  data = D.gaussian_mixture(getkey(), (4, 4, 4), dim=8)
  with pytest.raises(ValueError, match="data has K = 3 classes but net has K = 4"):
    nets.train(getkey(), data, HP, net=nets.mlp(8, 4, width=4, depth=1), config=CFG)
  with pytest.raises(ValueError, match="batch_size = 48 is out of range; allowed range: 1 <= batch_size <= N = 12"):
    nets.train(getkey(), data, HP, net=NET, config=CFG)
  with pytest.raises(ValueError, match="net.input_shape"):
    nets.train(getkey(), data, HP, net=nets.mlp(9, 3, width=4, depth=1), config=CFG)


# ------------------------------------------------------------------------------------------ UFM comparison

def test_comparison_of_the_closed_form_ce_minimiser_is_exact():
  """Features and classifier *at* the balanced CE-UFM minimiser (Zhu et al. 2021, built in closed form): the
  balance estimate of lam_H recovers lam_H, and every Gram, norm and metric agrees with the prediction."""
  K, n, lam_W, lam_H = 4, 5, 5e-3, 2e-3
  problem = ufm.make_problem(ufm.balanced_counts(K, n), d=6, lam_W=lam_W, lam_H=lam_H, loss="ce")
  p = ce_minimiser_params(problem)
  c = nets.compare_with_ufm(p.W, p.H.T, None, problem.counts, loss="ce", lam_W=lam_W)
  assert c.lam_H_from == "balance" and c.geometry == "simplex ETF"
  assert_close(c.lam_H, lam_H, "exact")
  assert_close(c.gram_W, c.pred_gram_W, "exact")
  assert_close(c.gram_M, c.pred_gram_M, "exact")
  assert_close(c.norm_H_sq, c.pred_norm_H_sq, "exact")
  assert c.gram_W_distance < 1e-12 and c.gram_M_distance < 1e-12
  for name in ("nc1", "etf_error_W", "etf_error_M", "self_duality", "nc4", "norm_W_sq"):
    assert abs(c.metrics[name] - c.pred_metrics[name]) < 1e-10 * max(1.0, abs(c.pred_metrics[name])), name


def test_comparison_at_a_network_width_above_2k_is_exact():
  """A network's penultimate width d exceeds the 2K of the UFM the prediction is built in: the same closed-form CE
  minimiser zero-padded to d = 2K + 5 (an isometric embedding: every Gram and metric unchanged) still compares
  exactly, the predicted metrics measured at the padded width."""
  K, n, lam_W, lam_H = 4, 5, 5e-3, 2e-3
  problem = ufm.make_problem(ufm.balanced_counts(K, n), d=6, lam_W=lam_W, lam_H=lam_H, loss="ce")
  p = ce_minimiser_params(problem)
  pad = 2 * K + 5 - 6
  W, H = np.pad(np.asarray(p.W), ((0, 0), (0, pad))), np.pad(np.asarray(p.H), ((0, pad), (0, 0)))
  c = nets.compare_with_ufm(W, H.T, None, problem.counts, loss="ce", lam_W=lam_W, lam_H=lam_H)
  assert c.gram_W_distance < 1e-12 and c.gram_M_distance < 1e-12
  for name in ("nc1", "etf_error_W", "etf_error_M", "self_duality", "nc4", "norm_W_sq"):
    assert abs(c.metrics[name] - c.pred_metrics[name]) < 1e-10 * max(1.0, abs(c.pred_metrics[name])), name


def test_comparison_of_the_imbalanced_bias_free_mse_minimiser_is_exact():
  """The general orthogonal frame of bias-free MSE (Dang et al. 2023 at depth 1): W rows orthogonal with
  ||w_k||^2 = sqrt(n_k lam_H / lam_W) - N lam_H, built from the diagonal Grams of ufm.theory.mse_minimiser, every
  sample at its class mean."""
  counts, lam_W, lam_H = (20, 10, 5, 5), 1e-3, 1e-3
  sol = ufm.theory.mse_minimiser(counts, lam_W, lam_H, bias=False)
  W = np.diag(np.sqrt(np.diag(np.asarray(sol.gram_W))))  # K x K, orthogonal rows
  Hbar = np.diag(np.sqrt(np.diag(np.asarray(sol.gram_M))))  # columns h_k along the same axes
  np.testing.assert_allclose(W @ Hbar, np.asarray(sol.logits_M), atol=1e-14)  # the Grams are diagonal
  H = Hbar[:, np.repeat(np.arange(4), counts)]
  c = nets.compare_with_ufm(W, H.T, None, counts, loss="mse", lam_W=lam_W, lam_H=lam_H)
  assert c.geometry == "general orthogonal frame" and c.lam_H_from == "given"
  assert_close(c.norms_W, c.pred_norms_W, "exact")
  assert_close(c.gram_M, c.pred_gram_M, "exact")
  assert c.metrics["nc1"] < 1e-20 and c.pred_metrics["nc1"] < 1e-20
  assert_close(c.metrics["max_angle_W"], 1 / 3, "exact")  # mutually orthogonal classifiers: |0 + 1/(K-1)|


@pytest.mark.slow  # compiles the convex reference's FISTA program (~10 s of CPU)
def test_comparison_of_imbalanced_ce_uses_the_convex_reference():
  counts, lam_W, lam_H = (20, 20, 4, 4), 5e-3, 5e-3
  problem = ufm.make_problem(counts, d=4, lam_W=lam_W, lam_H=lam_H, loss="ce", bias=True)
  sol = ufm.convex.ce_convex(np.asarray(counts, float), lam_W, lam_H, bias=True)
  p = ufm.convex.ufm_params(sol, problem)
  c = nets.compare_with_ufm(p.W, p.H.T, p.b, counts, loss="ce", lam_W=lam_W, lam_H=lam_H)
  assert c.geometry.startswith("imbalanced CE")
  assert c.gram_W_distance < 1e-8 and c.gram_M_distance < 1e-8
  assert_close(c.norm_W_sq, c.pred_norm_W_sq, "reference")
  assert math.isclose(c.metrics["nc1"], 0.0, abs_tol=1e-12)


@pytest.mark.slow  # one more training program (~10 s of CPU)
def test_cnn_trains_on_digit_images_with_mixup_and_label_smoothing(getkey):
  data = D.digits(jax.random.key(0), (40,) * 10, image=True)
  net = nets.cnn((8, 8, 1), 10, channels=4, width=32)
  cfg = nets.train_config(loss="ce", optimizer="adam", batch_size=50, epochs=(0, 30), mixup=True,
                          metrics=("nc1",), layer_metrics=("nc1",), fast_compile=True)
  res = nets.train(getkey(), data, nets.train_hparams(3e-3, label_smoothing=0.1), net=net, config=cfg)
  assert not bool(res.diverged)
  assert float(res.trace.train_acc[-1]) > 0.9 and float(res.trace.test_acc[-1]) > 0.8
  assert res.trace.layer_metrics["nc1"].shape == (2, 3)
