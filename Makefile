# Shortcuts for the commands of the README (each target is one command; .ci/run is the CI entry point).
PY := .venv/bin/python

.PHONY: venv test arch cli demo figures figures-check

venv:  ## the virtual environment with the test extras (the README's second command, without the tests)
	python3 -m venv .venv && .venv/bin/pip install -e '.[test]'

test:  ## the default test suite on 2 workers
	$(PY) -m pytest -n 2 -q

arch:  ## the architecture rules only (seconds): imports, private names, self-containment, docstrings, lengths
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

cli:  ## the command line's tests and help
	$(PY) -m pytest -q -p no:cacheprovider tests/test_cli.py && $(PY) -m ufm --help

demo:  ## every closed form beside its float64 reference solve
	$(PY) -m ufm demo

figures:  ## maintainers: rerun every experiment at its full configuration and refresh figures/ (PNG, PDF, JSON, README)
	for name in $$($(PY) -c "import experiments; print(' '.join(experiments.EXPERIMENTS))"); do \
	  $(PY) -m experiments run $$name --update-figures --no-progress || exit 1; done

figures-check:  ## the committed figures/README.md findings against figures/*.json and the modules
	$(PY) -m experiments report --check
