# CapsNet reproducible study: the table of contents.
#   make setup      install capslib, the notebook stack and pytest (torch 2.13.0 CPU if no torch)
#   make test       the test suite (CPU, a few minutes)
#   make bench      speed of each training path on a CUDA GPU -> results/benchmarks.md

PYTHON ?= python3
CPU_TORCH := torch==2.13.0

.PHONY: setup test bench
.DELETE_ON_ERROR:

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null && echo "torch already installed: keeping it" || $(PYTHON) -m pip install "$(CPU_TORCH)"
	$(PYTHON) -m pip install -e ".[notebooks,dev]"

test:
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) -m capslib bench --out-dir results
