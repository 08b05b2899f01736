# Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LS_STAMP := .labelstudio/.installed
PYTEST_ARGS ?=

.PHONY: install labelstudio test test-fast demo bench experiments lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Label Studio runs in its own venv (.labelstudio/venv): it pins Django, pyarrow and friends.
labelstudio: $(LS_STAMP)

$(LS_STAMP): $(STAMP)
	$(BIN)/python -m labeling.studio.server install
	touch $(LS_STAMP)

test: install labelstudio
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	CURATE_SKIP_LABELSTUDIO=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: install labelstudio
	$(BIN)/python -m examples.demo

bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

experiments: install
	$(BIN)/python -m experiments.weak_supervision
	$(BIN)/python -m experiments.active_learning

lint: install
	$(BIN)/ruff check curation labeling training api cli benchmarks tests examples

clean:
	rm -rf .demo .bench .pytest_cache .hypothesis
