"""The compiled hot loop: no copy of H per gradient step (checked on the optimised HLO XLA runs)."""

import functools
import re

import jax
import jax.numpy as jnp
import pytest

import ufm
from ufm.solvers import GD_STEPPER, canonicalise

d, K, n = 64, 4, 100


def _computations(hlo: str) -> dict:
  """Computation name -> its text, from ``compiled.as_text()``."""
  out, name = {}, None
  for line in hlo.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if m and not line.startswith(" "):
      name = m.group(1)
      out[name] = []
    elif name is not None:
      out[name].append(line)
  return {k: "\n".join(v) for k, v in out.items()}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_the_gradient_step_loop_copies_no_feature_matrix(dtype):
  """Heavy-ball SGD, the loop of ``log_every`` steps: XLA updates H and its momentum in place (no ``copy`` of a
  ``d x N`` array in the innermost while body). The chunk loop around it keeps the last finite H and momentum (two
  copies per chunk of steps), which the divergence rollback needs."""
  p = ufm.make_problem(ufm.balanced_counts(K, n), d=d, lam_W=5e-4, lam_H=5e-4, loss="mse", dtype=dtype)
  hp = ufm.gd_hparams(0.1, momentum=0.9, dtype=dtype)
  p, hp = canonicalise(p, hp)
  state = jax.jit(functools.partial(GD_STEPPER.init, optimizer="sgd"))(jax.random.key(0), p, hp)
  advance = jax.jit(functools.partial(GD_STEPPER.advance, optimizer="sgd", num_chunks=2, log_every=10,
                                      trace_metrics=()), donate_argnums=(0,))
  comps = _computations(advance.lower(state, p, hp).compile().as_text())
  bodies = {m for text in comps.values() for m in re.findall(r"body=%?([\w.\-]+)", text)}
  innermost = [b for b in bodies if " while(" not in comps[b]]
  assert innermost, sorted(bodies)
  ty = "f32" if dtype == jnp.float32 else "f64"
  h_copy = re.compile(rf"= {ty}\[{d},{K * n}\]\{{[^}}]*\}} copy\(")
  for b in innermost:
    assert "dot(" in comps[b] or "fusion" in comps[b], b  # the gradient step itself
    assert not h_copy.search(comps[b]), f"a copy of H in the step loop {b}"
  per_chunk = sum(len(h_copy.findall(comps[b])) for b in bodies - set(innermost))
  assert per_chunk <= 2, per_chunk
