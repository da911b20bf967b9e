# The kit's entry points. Each target creates the virtual environment first when it is missing.
#   make setup       create .venv and install the kit (+ test and lab extras)
#   make reproduce   run every notebook with papermill (PROFILE=mini by default)
#   make test        unit tests + every notebook under nbval in smoke mode
#   make lab         JupyterLab with the kit's kernel
#   make data        list the real benchmarks and their status (quick/paper profiles)
#   make rehearse    every notebook under quick and paper, smoke mode, on stand-in data (DEVICE=cpu|cuda)
PYTHON ?= python3.11
VENV ?= .venv
PROFILE ?= mini
ARGS ?=
DEVICE ?= cpu
BIN := $(VENV)/bin
# Notebook kernels import ood_utils from this checkout, whichever venv runs them.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
STAMP := $(VENV)/.installed

.PHONY: setup reproduce test lab data rehearse clean-runs
setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,lab]"
	# animal-mnist declares tensorflow as a dependency but the kit only reads its gzip files
	$(BIN)/python -m pip install -q --no-deps animal-mnist==0.4
	$(BIN)/python -m ipykernel install --sys-prefix --name ood-kit --display-name "OOD kit (ood_utils)"
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m ood_utils.run --profile $(PROFILE) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

# New and opened notebooks start on the kit's kernel; JupyterLab refuses to run as root (most containers)
# unless told to, so --allow-root is added only for root.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks --MappingKernelManager.default_kernel_name=ood-kit$(if $(filter 0,$(shell id -u)), --allow-root)

data: $(STAMP)
	$(BIN)/python -m data_prep --list

rehearse: $(STAMP)
	$(BIN)/python -m data_prep.rehearse --profiles quick paper --device $(DEVICE) --variants $(ARGS)

clean-runs:
	rm -rf runs/$(PROFILE) figures/$(PROFILE)
