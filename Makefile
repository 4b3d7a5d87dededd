# Project tasks. `make install` builds .venv; `make test` runs the test suite (CPU, 8 fake devices).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: install test test-fast tools-venv clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# The complete suite (what .ci/run runs); test-fast leaves out the tests marked slow (compiles, subprocesses).
# TEST_WORKERS pytest-xdist processes share the test files (a file's tests stay in one process, so its module
# fixtures are built once); XLA compiles on one core, so two workers keep a 2-core machine busy.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
test: install
	$(PYTEST) tests

test-fast: install
	$(PYTEST) -m "not slow" tests

# A separate venv with the PyTorch reference implementations, only for regenerating goldens in tools/.
tools-venv: .venv-tools/.installed

.venv-tools/.installed: requirements-tools.txt
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/python -m pip install --quiet --upgrade pip
	.venv-tools/bin/python -m pip install --quiet -r requirements-tools.txt
	.venv-tools/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

clean:
	rm -rf $(VENV) .venv-tools

# The default job: captioned shapes on this CPU within DEMO_MINUTES (install included), results in WORKDIR.
WORKDIR ?= runs/demo
DEMO_MINUTES ?= 20
.PHONY: demo
demo:
	@start=$$(date +%s); $(MAKE) --no-print-directory install && \
	  $(PY) -m xmc_gan_jax.demo --workdir=$(WORKDIR) --minutes=$(DEMO_MINUTES) --start_time=$$start

# shellcheck for launch/*.sh (tests/launch fails without it); CI runs this before the tests.
.PHONY: shellcheck
shellcheck:
	command -v shellcheck >/dev/null || (apt-get install -y shellcheck || (apt-get update && apt-get install -y shellcheck))

# Optional: libtpu (the version jax[tpu] pins for this jax) so that `--mode=describe --topology=v5e:2x2` compiles
# the train step for a Cloud TPU topology on this CPU machine (ahead of time; no TPU needed). docs/tpu_aot.md.
LIBTPU_VERSION ?= 0.0.42.1
.PHONY: install-tpu-aot
install-tpu-aot: install
	$(PY) -m pip install --quiet --no-deps "libtpu==$(LIBTPU_VERSION)"
	$(PY) -c "import importlib.metadata as m; print('libtpu', m.version('libtpu'))"
