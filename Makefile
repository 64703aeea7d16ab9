# Two commands from a fresh clone (Python 3.11 and pip, no GPU):
#   make pipeline   set up .venv and run the default pipeline to results/metrics.tsv
#   make test       set up .venv and run the whole test suite (what .ci/run calls)
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= all
BIN := $(VENV)/bin

.PHONY: pipeline test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

pipeline: venv
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores $(CORES) results/metrics.tsv

test: venv
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf results .snakemake
