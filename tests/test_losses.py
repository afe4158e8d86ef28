"""The loss registry: values against NumPy, the mixup identity, jit/no-jit variants, and a loss added at run time
reaching every family through one registration."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from helpers import assert_close
from ufm import deep, losses, mixup, objectives, solvers, theory, vicinity
from ufm.problem import Family, make_problem

# ------------------------------------------------------------------------------------------ the built-in losses


def _np_ce(Z, Y):  # (B, K)
  Zs = Z - Z.max(-1, keepdims=True)
  return -np.sum(Y * (Zs - np.log(np.exp(Zs).sum(-1, keepdims=True))), -1)


def _np_mse(Z, Y):
  return 0.5 * np.sum((Z - Y) ** 2, -1)


@pytest.mark.parametrize("name, ref", [("ce", _np_ce), ("mse", _np_mse)])
def test_builtin_losses_match_numpy_with_soft_targets(name, ref, getkey):
  Z = np.asarray(jax.random.normal(getkey(), (7, 4)))
  Y = np.asarray(jax.nn.softmax(jax.random.normal(getkey(), (7, 4))))  # soft targets (label smoothing, mixup)
  assert_close(losses.get(name).per_sample(jnp.asarray(Z), jnp.asarray(Y)), ref(Z, Y), "exact")
  assert_close(losses.mean(name, jnp.asarray(Z.T), jnp.asarray(Y.T)), ref(Z, Y).mean(), "exact")


def test_mixed_loss_is_linear_in_the_target_for_ce_and_off_by_a_constant_for_mse(getkey):
  """CE(z, lam y1 + (1-lam) y2) = lam CE(z, y1) + (1-lam) CE(z, y2); for MSE the two differ by
  lam (1-lam) ||y1 - y2||^2 / 2 (the docstring of ufm.losses.mixed)."""
  K, M = 4, 6
  Z = jax.random.normal(getkey(), (K, M))
  Y1 = jax.nn.one_hot(jnp.arange(M) % K, K).T
  Y2 = jax.nn.one_hot((jnp.arange(M) + 1) % K, K).T
  lam = jax.random.uniform(getkey(), (M,))
  mix = lam[None, :] * Y1 + (1 - lam[None, :]) * Y2
  assert_close(losses.mixed("ce", Z, Y1, Y2, lam), losses.get("ce").per_sample(Z.T, mix.T), "exact")
  gap = losses.mixed("mse", Z, Y1, Y2, lam) - losses.get("mse").per_sample(Z.T, mix.T)
  assert_close(gap, 0.5 * lam * (1 - lam) * jnp.sum((Y1 - Y2) ** 2, 0), "exact")


def test_registry_refuses_unknown_names_and_bad_registrations():
  with pytest.raises(ValueError, match=r"loss = 'hinge' is not supported; allowed values: ce, mse"):
    losses.get("hinge")
  with pytest.raises(ValueError, match="already registered"):
    losses.register(losses.Loss("ce", losses.get("ce").per_sample, "dup", "none"))
  with pytest.raises(ValueError, match="not a valid name"):
    losses.register(losses.Loss("two words", losses.get("ce").per_sample, "bad", "none"))
  with pytest.raises((ValueError, TypeError)):  # TypeError from the test suite's runtime type checker
    losses.register(("x", None))
  assert losses.names()[:2] == ("ce", "mse") and set(losses.registry) >= {"ce", "mse"}


@pytest.mark.parametrize("build", [
    lambda loss: make_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, loss=loss),
    lambda loss: deep.make_deep_problem((2, 2), widths=(2, 2), lam_W=0.1, lam_H=0.1, loss=loss),
    lambda loss: vicinity.make_vicinity_problem(jnp.zeros((2, 4)), (2, 2), lam_W=0.1, lam_H=0.1, loss=loss),
    lambda loss: mixup.make_input_mixup_problem(3, d=2, lam_H=0.1, loss=loss),
    lambda loss: mixup.make_manifold_mixup_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, loss=loss),
], ids=["plain", "deep", "vicinity", "input_mixup", "manifold_mixup"])
def test_every_family_refuses_an_unknown_loss_listing_the_registered_ones(build):
  with pytest.raises(ValueError, match=r"loss = 'hinge' is not supported; allowed values: ce, mse"):
    build("hinge")


class ObjectiveVariantsTest(chex.TestCase):
  """The objective and the registry's mean give the same numbers with and without ``jit``."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_objective_jit_and_eager_agree(self):
    for loss in ("ce", "mse"):
      p = make_problem((3, 2, 4), d=3, lam_W=0.02, lam_H=0.03, lam_b=0.01, loss=loss, bias=True)
      params = p.init(jax.random.key(1), 0.7)
      got = self.variant(lambda q, p=p: objectives.objective(q, p))(params)
      assert_close(got, objectives.ce_loss(params, p) if loss == "ce" else objectives.mse_loss(params, p), "exact")

  @chex.variants(with_jit=True, without_jit=True)
  def test_family_values_jit_and_eager_agree(self):
    problems = [deep.make_deep_problem((3, 2), widths=(3, 2), lam_W=0.02, lam_H=0.03, loss="ce"),
                mixup.make_manifold_mixup_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, num_lam=3)]
    for p in problems:
      params = p.init(jax.random.key(2), 0.5)
      chex.assert_trees_all_close(self.variant(lambda q, p=p: p.value(q))(params), p.value(params), rtol=1e-12)


# ------------------------------------------------------------------------------------------ a loss added at run time


def _huber(logits, targets):
  r"""Huber loss with delta = 1 summed over classes: 0.5 r^2 for |r| <= 1, |r| - 0.5 beyond (r = z - y)."""
  r = jnp.abs(logits - targets)
  return jnp.sum(jnp.where(r <= 1.0, 0.5 * r**2, r - 0.5), axis=-1)


@pytest.fixture
def huber():
  """Adding a loss is this one registration (the whole diff of a new loss module): every family, the networks and
  the theory dispatch see it by name."""
  loss = losses.register(losses.Loss("huber_test", _huber, "Huber loss (delta = 1) on z - y", "Huber 1964"))
  try:
    yield loss.name
  finally:
    losses._REGISTRY.pop(loss.name)


def test_a_registered_loss_reaches_every_family(huber, getkey):
  p = make_problem((3, 2), d=3, lam_W=0.01, lam_H=0.02, loss=huber)
  params = p.init(getkey(), 2.0)
  Z = np.asarray(params.W @ params.H)
  r = np.abs(Z - np.asarray(p.Y))
  data = np.sum(np.where(r <= 1, 0.5 * r**2, r - 0.5)) / p.N
  reg = 0.5 * (0.01 * np.sum(np.asarray(params.W) ** 2) + 0.02 * np.sum(np.asarray(params.H) ** 2))
  assert_close(p.value(params), data + reg, "exact")
  sol = solvers.lbfgs_reference(getkey(), p, solvers.lbfgs_hparams(gtol=1e-9), max_steps=2000)
  assert bool(sol.converged) and float(sol.grad_norm) <= 1e-9
  # depth 1 is the plain UFM with the same loss
  q = deep.make_deep_problem((3, 2), widths=(3,), lam_W=0.01, lam_H=0.02, loss=huber)
  assert_close(q.value(deep.DeepParams(Ws=(params.W,), H=params.H, b=params.b)), p.value(params), "exact")
  v = vicinity.make_vicinity_problem(np.asarray(params.H), (3, 2), lam_W=0.01, lam_H=0.02, loss=huber)
  assert np.isfinite(float(v.value(params)))
  for m in (mixup.make_input_mixup_problem(3, d=2, lam_H=0.1, loss=huber, num_lam=3),
            mixup.make_manifold_mixup_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, loss=huber, num_lam=3)):
    assert np.isfinite(float(m.value(m.init(getkey(), 0.5))))


def test_a_registered_loss_has_no_closed_form_until_theory_registers_one(huber):
  p = make_problem((3, 3), d=3, lam_W=0.01, lam_H=0.02, loss=huber)
  with pytest.raises(theory.NoClosedFormError, match="huber_test"):
    theory.predict(p)


def test_every_family_follows_the_protocol(getkey):
  """Each family is a Family (runtime check of the protocol), has its own FAMILY key, sweepable scalar leaves that
  are array leaves, and value / init / project that the solvers call."""
  from ufm import spherical
  fams = [make_problem((2, 3), d=3, lam_W=0.1, lam_H=0.1),
          deep.make_deep_problem((2, 3), widths=(3, 2), lam_W=0.1, lam_H=0.1),
          vicinity.make_vicinity_problem(jnp.ones((3, 5)), (2, 3), lam_W=0.1, lam_H=0.1, beta=1.0),
          mixup.make_input_mixup_problem(3, d=2, lam_H=0.1, num_lam=2),
          mixup.make_manifold_mixup_problem((2, 3), d=3, lam_W=0.1, lam_H=0.1, num_lam=2),
          spherical.make_spherical_problem((2, 3), d=3, tau=0.5)]
  keys = [p.FAMILY for p in fams]
  assert len(set(keys)) == len(keys) and all(keys)
  for p in fams:
    assert isinstance(p, Family), type(p).__name__
    leaves = jax.tree.leaves(p)
    for name in p.SCALAR_LEAVES:
      assert any(x is getattr(p, name) for x in leaves), (p.FAMILY, name)
    params = p.project(p.init(getkey(), 0.3)) if p.constrained else p.init(getkey(), 0.3)
    sol = solvers.gradient_descent(getkey(), p, solvers.gd_hparams(0.05), num_steps=4, log_every=2)
    assert np.isfinite(float(p.value(params))) and np.isfinite(float(sol.objective)), p.FAMILY
  assert ufm.problem.Problem.FAMILY == "plain"
