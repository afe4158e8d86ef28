"""One process of the two-process sweep test (``tests/test_multihost.py``): ``python multihost_worker.py PID PORT OUT``.

Joins a two-process JAX cluster on 127.0.0.1 (CPU devices, gloo collectives), runs a sweep sharded over both
processes' devices, and process 0 writes the gathered result to ``OUT`` (``.npz``).
"""

import sys

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of several processes talk over gloo

import ufm  # noqa: E402
from multihost_case import AXES, PLAN, STATIC, case  # noqa: E402


def main(pid: int, port: int, out: str) -> None:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                             initialization_timeout=60)
  assert jax.process_count() == 2 and jax.device_count() == 2, (jax.process_count(), jax.device_count())
  problem, hparams = case()
  res = ufm.sweep.sweep(ufm.gradient_descent, problem, hparams, axes=AXES, plan=dict(PLAN, devices=2), **STATIC)
  if pid == 0:
    sol = res.solution
    np.savez(out, objective=np.asarray(sol.objective), H=np.asarray(sol.params.H), W=np.asarray(sol.params.W),
             trace=np.asarray(sol.trace.objective))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
