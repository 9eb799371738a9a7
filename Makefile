# Each target sets up what it needs: on a fresh machine `make test` or `make dry-run` is the one command.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: a plain `torch` requirement can pull several GB of CUDA packages on a CPU machine.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test test-gpu dry-run clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_CPU)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# On a GPU machine with the [gpu] extra installed: the tests marked gpu.
test-gpu:
	$(PYTHON) -m pytest -m gpu $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache
