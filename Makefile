# docker-job-manager: developer and CI entry points.
#   make test    - venv, apt packages, the cgroup v2 VM, the test suite (it starts its own
#                  private engines), the suite on cgroup v2 (test-cgroup2), the other Pythons
#                  (test-pythons), mypy, docs
#   make test-cgroup2 - tests/engines/test_cgroup2.py on the cgroup v2 engine (a VM under qemu)
#   make test-pythons - the engine-free tests and the core subset on Python 3.9 and 3.13
#   make docs    - Sphinx HTML into docs/_build/html, warnings are errors
#   make demo    - python -m backend demo
#   make bench   - benchmarks/run.py, then benchmarks/exec.py on each engine kind
#   make engines / engines-stop - two private engines under /tmp/djm, for trying things by hand

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ENGINES_ROOT ?= /tmp/djm

.PHONY: venv ensure test test-main test-cgroup2 test-pythons docs demo bench engines \
	engines-stop clean

venv: $(STAMP)

# re-installs only when setup.py changes (or the venv is gone)
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

# what the engine kinds (Docker 20.10, Docker 28.5, Podman 4.3, the cgroup v2 VM: qemu and
# debootstrap, the VM built once under /var/cache/djm) and the docs (graphviz) need,
# installed when missing (needs root then); quick when all is there
ensure: venv
	$(PY) scripts/engines.py ensure

# every part runs, each timed; the target fails when any fails
test: venv ensure
	@status=0; \
	for part in test-main test-cgroup2 test-pythons; do \
	    start=$$(date +%s); \
	    $(MAKE) --no-print-directory $$part || status=$$?; \
	    echo "make $$part: $$(( $$(date +%s) - start )) s"; \
	done; \
	$(PY) -m mypy backend || status=$$?; \
	$(MAKE) --no-print-directory docs || status=$$?; \
	exit $$status

# the suite on the private engines of every kind (the cgroup v2 suite apart)
test-main: venv ensure
	$(PY) -m pytest -q -m "not cgroup2" tests

# the short suite on the cgroup v2 engine: a VM under qemu's emulation, booted once
test-cgroup2: venv ensure
	$(PY) -m pytest -q -m cgroup2 tests

# the engine-free unit tests and the core subset (marker "core") on the other Pythons, each
# in a venv of its own made from pyenv's interpreter
PYTHONS ?= 3.9 3.13
PYENV_ROOT ?= $(HOME)/.pyenv

test-pythons: ensure $(foreach v,$(PYTHONS),.venv-$(v)/.installed)
	@status=0; for v in $(PYTHONS); do \
	    echo "Python $$v:"; \
	    .venv-$$v/bin/python -m pytest -q -m "unit or core" tests || status=$$?; \
	done; exit $$status

.venv-%/.installed: setup.py
	@py=$$(ls -d $(PYENV_ROOT)/versions/$*.*/bin/python 2>/dev/null | sort -V | tail -n 1); \
	test -n "$$py" || { echo "make test-pythons: no Python $* under $(PYENV_ROOT)/versions" \
	                         "(pyenv install $*)"; exit 1; }; \
	test -x .venv-$*/bin/python || $$py -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q -e '.[test]'
	touch $@

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
	rm -rf $(VENV) $(foreach v,$(PYTHONS),.venv-$(v)) *.egg-info docs/_build .pytest_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
