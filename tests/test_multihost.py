"""A sweep sharded over two processes (``jax.distributed`` on 127.0.0.1, CPU devices) equals one process bit for bit."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import ufm
from multihost_case import AXES, PLAN, STATIC, case

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_process_sweep_equals_one_process_bit_for_bit(tmp_path):
  """Two local processes (coordinator 127.0.0.1, a free port, one CPU device each) run the planned sweep over a
  two-device mesh; process 0 gathers it. Same objectives, parameters and traces as one process, bitwise."""
  port, out = _free_port(), tmp_path / "two.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]),
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen([sys.executable, str(HERE / "multihost_worker.py"), str(pid), str(port), str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in (0, 1)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=300)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)
  problem, hparams = case()
  one = ufm.sweep.sweep(ufm.gradient_descent, problem, hparams, axes=AXES, plan=dict(PLAN, devices=1), **STATIC)
  with np.load(out) as two:
    sol = one.solution
    for name, mine in (("objective", sol.objective), ("H", sol.params.H), ("W", sol.params.W),
                       ("trace", sol.trace.objective)):
      np.testing.assert_array_equal(two[name], np.asarray(mine), err_msg=name)
