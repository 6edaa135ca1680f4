# Set-up and entry points. Everything installs into .venv; nothing relies on a hand install.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch that lies on these machines; override to pick another build.
TORCH_SPEC ?= torch==2.13.0
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
STAMP := $(VENV)/.installed
# pip warns about this machine's optional local indexes; keep the rest of its output.
QUIET := { grep -v '^WARNING: Location' || true; }

.PHONY: all venv dataset demo test lint bench clean

all: test

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH_SPEC)" 2>&1 | $(QUIET)
	$(PIP) install -q -e ".[dev]" 2>&1 | $(QUIET)
	# extras that depend on torch must never replace the build installed above
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-constraint.txt
	$(PIP) install -q -c $(VENV)/torch-constraint.txt -e ".[dev,onnx,brevitas]" 2>&1 | $(QUIET)
	$(PY) -c "import torch, numba, numpy, scipy, matplotlib, safetensors, onnx, onnxruntime, brevitas"
	touch $(STAMP)

venv: $(STAMP)

# Debian's dataset-fashion-mnist package puts the IDX files in $(FMNIST_DIR).
dataset:
	@if [ ! -f $(FMNIST_DIR)/t10k-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; fi; \
	fi

demo: venv dataset
	$(VENV)/bin/mcelsim demo --out runs/demo

lint: venv
	$(VENV)/bin/ruff check .

test: venv dataset lint
	$(VENV)/bin/pytest -n 2 --dist loadgroup -q

# Speed measurements (not part of the tests); figures go to benchmarks/README.md by hand.
bench: venv dataset
	$(PIP) install -q -e ".[bench]" 2>&1 | $(QUIET)
	$(PY) benchmarks/bench_sampling.py --write
	$(PY) benchmarks/bench_training.py --batches 20 --rounds 3
	$(PY) benchmarks/bench_engine.py --images 10000 --repeats 2 --chips 3
	$(PY) benchmarks/bench_campaign.py --images 1000 --chips 1

clean:
	rm -rf $(VENV) build *.egg-info
