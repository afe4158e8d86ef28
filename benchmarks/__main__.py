"""``python -m benchmarks [--quick] [--json PATH]`` (see :mod:`benchmarks`)."""

from benchmarks import main

if __name__ == "__main__":
  main()
