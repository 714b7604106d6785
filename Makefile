# azr: set-up and checks. `make run` and `make test` are the README's two commands; each works
# on a fresh machine (they create the virtual environment and build the Rust extension first).

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# The Rust build runs componentize-py, and pyo3 finds Python, through the environment's bin.
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))
STAMP := $(VENV)/.installed

.PHONY: run test build lint rust-test py-test bench clean

run: build
	$(BIN)/azr-executor run examples/programs.jsonl -o runs/executor-demo.jsonl
	@echo "outcomes written to runs/executor-demo.jsonl"

test: lint rust-test py-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "maturin>=1.16,<2" "componentize-py==0.25.1"
	$(BIN)/pip install --no-build-isolation -e ".[dev]"
	touch $(STAMP)

# Rebuild the extension from the current Rust sources (quick when nothing changed).
build: $(STAMP)
	@mkdir -p runs
	$(BIN)/maturin develop --release --quiet

lint: $(STAMP)
	cargo fmt --all --check
	cargo clippy --release --all-targets --features python -- -D warnings
	$(BIN)/ruff check python tests rust/executor/guest
	$(BIN)/ruff format --check python tests rust/executor/guest

rust-test: $(STAMP)
	cargo test --release

py-test: build
	$(BIN)/python -m pytest -q

bench: build
	$(BIN)/python -m azr.bench.executor

clean:
	rm -rf $(VENV) target runs
