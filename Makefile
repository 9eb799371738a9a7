# Each target sets up what it needs: on a fresh machine `make test` or `make dry-run` is the one command.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: a plain `torch` requirement can pull several GB of CUDA packages on a CPU machine.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

# Kaggle packaging: the source dataset and the offline wheels dataset (ids in dataset-metadata.json).
KAGGLE_SOURCE_DIR ?= build/kaggle-source
KAGGLE_WHEELS_DIR ?= build/kaggle-wheels
KAGGLE_PYTHON ?= 3.12
IMAGE_CONSTRAINTS ?= kaggle/image-constraints.txt
# wheels-check's interpreter; empty: the first Python $(KAGGLE_PYTHON) found on PATH, in pyenv or by uv
KAGGLE_PYTHON_BIN ?=
DRY_RUN_DIR ?= runs/dry-run
DRY_RUN_TASKS ?= 8
# Torch threads per process in the dry run: its share of the cores for each of the 2 CPU workers. Torch's default
# (every core, in every process) has the two workers' threads wait on each other: on 2 cores a tiny-model training
# step took 185 ms instead of 15 ms, and the tasks the dry run should solve ran out of time.
DRY_RUN_THREADS ?= $(shell n=$$(nproc); echo $$(( n / 2 > 0 ? n / 2 : 1 )))

.PHONY: install test test-gpu dry-run dataset upload wheels wheels-check kernel clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	scripts/install-cpu-torch.sh $(BIN) "$(TORCH_CPU)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# The Ray backend's tests need the [ray] extra: installed here, beside the base install (which stays without it).
test: install $(BIN)/.installed-ray
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(BIN)/.installed-ray: $(BIN)/.installed
	$(BIN)/pip install -q -e ".[dev,ray]"
	touch $@

# On a GPU machine with the [gpu] extra installed: the tests marked gpu.
test-gpu:
	$(PYTHON) -m pytest -m gpu $(PYTEST_ARGS)

# The notebook, CPU only, with the tiny model on the dry-run slice (kaggle_env.DRY_RUN_SLICE: 2 tasks it solves,
# 6 ARC-AGI-2 evaluation tasks it does not), which the notebook writes as a challenges file into the run folder:
# the whole path in a few minutes, then validation and the score on those same tasks.
dry-run: install
	rm -rf $(DRY_RUN_DIR) && mkdir -p $(DRY_RUN_DIR)
	OMP_NUM_THREADS=$(DRY_RUN_THREADS) $(BIN)/papermill --log-output --cwd . notebooks/submission.ipynb \
		$(DRY_RUN_DIR)/submission.executed.ipynb -p dry_run True -p out_dir $(DRY_RUN_DIR) -p n_tasks $(DRY_RUN_TASKS) $(DRY_RUN_ARGS)
	$(BIN)/arc-submit validate $(DRY_RUN_DIR)/submission.json --challenges $(DRY_RUN_DIR)/dry-run_challenges.json \
		--n-tasks $(DRY_RUN_TASKS)
	$(BIN)/arc-submit score $(DRY_RUN_DIR)/submission.json --solutions $(DRY_RUN_DIR)/dry-run_solutions.json \
		--n-tasks $(DRY_RUN_TASKS) | tail -n 1

# The folder `kaggle datasets version -p ... --dir-mode zip` uploads: the package source, notebook and metadata.
dataset:
	rm -rf $(KAGGLE_SOURCE_DIR) && mkdir -p $(KAGGLE_SOURCE_DIR)
	git ls-files src notebooks kaggle pyproject.toml README.md | tar -cf - -T - | tar -xf - -C $(KAGGLE_SOURCE_DIR)
	cp dataset-metadata.json $(KAGGLE_SOURCE_DIR)/
	@echo "built $(KAGGLE_SOURCE_DIR): upload with 'make upload'"

# Needs Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME + KAGGLE_KEY) and the notebook extra.
upload: dataset install
	$(BIN)/pip install -q -e ".[notebook]"
	@if [ -f $$HOME/.kaggle/kaggle.json ] || [ -n "$$KAGGLE_KEY" ]; then \
		$(BIN)/kaggle datasets version -p $(KAGGLE_SOURCE_DIR) --dir-mode zip -m "arc_submit $$(git rev-parse --short HEAD)"; \
	else echo "no Kaggle credentials: put kaggle.json in ~/.kaggle or set KAGGLE_USERNAME and KAGGLE_KEY"; exit 1; fi

# The notebook as a Kaggle kernel: `kaggle kernels push -p build/kaggle-kernel` (GPU on, internet off).
kernel: install
	$(BIN)/arc-submit check-kernel kaggle/kernel-metadata.json
	rm -rf build/kaggle-kernel && mkdir -p build/kaggle-kernel
	cp kaggle/kernel-metadata.json notebooks/submission.ipynb build/kaggle-kernel/
	@echo "push with: kaggle kernels push -p build/kaggle-kernel"

# The offline wheelhouse for Kaggle's image: what kaggle/wheels-requirements.txt adds, resolved for Kaggle's Python
# and platform by uv (no local Python $(KAGGLE_PYTHON) needed) against what the image has (IMAGE_CONSTRAINTS, a
# `pip freeze` of a Kaggle notebook), downloading only the rest.
wheels: install
	$(BIN)/arc-submit wheels --requirements kaggle/wheels-requirements.txt --constraints $(IMAGE_CONSTRAINTS) \
		--python $(KAGGLE_PYTHON) --out $(KAGGLE_WHEELS_DIR)
	sed 's/arc-submit-source/arc-submit-wheels/; s/arc_submit source/arc_submit offline wheels/' \
		dataset-metadata.json > $(KAGGLE_WHEELS_DIR)/dataset-metadata.json
	@echo "upload with: kaggle datasets version -p $(KAGGLE_WHEELS_DIR) --dir-mode zip"

# The wheelhouse installs offline, resolver on, into a fresh python$(KAGGLE_PYTHON) holding the image's packages:
# this needs a real Python $(KAGGLE_PYTHON) (`arc-submit find-python` says where it looked and how to point at one).
wheels-check: install
	py=$$($(BIN)/arc-submit find-python $(KAGGLE_PYTHON) --given "$(KAGGLE_PYTHON_BIN)") && \
		scripts/check-wheelhouse.sh "$$py" $(KAGGLE_WHEELS_DIR) $(IMAGE_CONSTRAINTS) $(BIN)/uv

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache
