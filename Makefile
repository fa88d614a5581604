# Two commands for a fresh machine:
#   make demo   installs into .venv and runs the demo on the embedded synthetic night scene (-> demo_out/)
#   make test   installs, lints and runs the tests twice: with current numpy/OpenCV and Ray (.venv) and with
#               what ROS 2 Humble/Jazzy ship, numpy 1.x and OpenCV 4.6, without the optional Ray (.venv-ros:
#               the Ray tests skip there, so the package is also tested as most users install it)
PYTHON ?= python3
VENV ?= .venv
ROS_VENV ?= .venv-ros
# torch first, pinned to the CPU wheel: a bare `torch` requirement would pull several GB of CUDA packages.
TORCH ?= torch==2.13.0
ROS_FLOOR ?= numpy==1.26.4 opencv-python-headless==4.6.0.66
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: install demo test test-current test-ros lint bench clean

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) $(TORCH)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev,ray]'
	touch $@

$(ROS_VENV)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(ROS_VENV)
	$(ROS_VENV)/bin/pip install $(PIP_FLAGS) $(TORCH) $(ROS_FLOOR)
	$(ROS_VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]' $(ROS_FLOOR)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/ivfusion demo --out demo_out

lint: install
	$(VENV)/bin/ruff check .

test-current: install
	$(VENV)/bin/python -m pytest

test-ros: $(ROS_VENV)/.installed
	$(ROS_VENV)/bin/python -c "import numpy, cv2; print('ROS-like env: numpy', numpy.__version__, 'OpenCV', cv2.__version__)"
	$(ROS_VENV)/bin/python -m pytest -q

test: lint test-current test-ros

bench: install
	$(VENV)/bin/ivfusion bench --frames 50 --size 640x512

clean:
	rm -rf $(VENV) $(ROS_VENV) demo_out build *.egg-info
