"""The sweep of the two-process test, shared by the test (one process) and its workers (two processes)."""

import ufm

AXES = {"lr": [0.05, 0.1, 0.2], "seed": [0, 1]}
STATIC = {"num_steps": 40, "log_every": 20}
#: One configuration per vmap batch, three per call and device: the one-process run uses the same per-device program.
PLAN = {"batch": 1, "chunk": 3}


def case():
  """The problem and hyperparameters swept."""
  problem = ufm.make_problem(ufm.balanced_counts(3, 2), d=3, lam_W=1e-2, lam_H=1e-2, loss="ce")
  return problem, ufm.gd_hparams(0.1)
