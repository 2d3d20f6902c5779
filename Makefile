# docker-job-manager: developer and CI entry points.
#   make test    - venv, apt packages, the test suite (it starts its own private engines), docs
#   make docs    - Sphinx HTML into docs/_build/html, warnings are errors
#   make demo    - python -m backend demo
#   make bench   - benchmarks/run.py, then benchmarks/exec.py on each engine kind
#   make engines / engines-stop - two private engines under /tmp/djm, for trying things by hand

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ENGINES_ROOT ?= /tmp/djm

.PHONY: venv ensure test docs demo bench engines engines-stop clean

venv: $(STAMP)

# re-installs only when setup.py changes (or the venv is gone)
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

# what the engine kinds (Docker 20.10, Docker 28.5, Podman 4.3) and the docs (graphviz) need,
# installed when missing (needs root then); quick when all is there
ensure: venv
	$(PY) scripts/engines.py ensure

# pytest and the docs both run; the target fails when either fails
test: venv ensure
	@status=0; \
	$(PY) -m pytest -q tests || status=$$?; \
	$(PY) -m mypy backend || status=$$?; \
	$(MAKE) --no-print-directory docs || status=$$?; \
	exit $$status

docs: venv
	$(PY) -m sphinx -E -W -q -b html docs docs/_build/html

# the demo on two private engines under DEMO_ROOT, stopped however it ends (failure, Ctrl-C)
DEMO_ROOT ?= /tmp/djm-demo
demo: venv ensure
	@trap '$(PY) scripts/engines.py stop --root $(DEMO_ROOT)' EXIT; trap 'exit 130' INT TERM; \
	$(PY) scripts/engines.py start --count 2 --root $(DEMO_ROOT) && \
	$(PY) -m backend demo $$($(PY) scripts/engines.py urls --root $(DEMO_ROOT) | \
	                         sed 's/^/--engine /')

bench: venv ensure
	$(PY) -c "import matplotlib, epicbox" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py
	for kind in docker20 docker28 podman; do $(PY) benchmarks/exec.py --kind $$kind || exit 1; done

engines: venv ensure
	$(PY) scripts/engines.py start --count 2 --root $(ENGINES_ROOT)

engines-stop:
	$(PYTHON) scripts/engines.py stop --root $(ENGINES_ROOT)

clean:
	rm -rf $(VENV) *.egg-info docs/_build .pytest_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
