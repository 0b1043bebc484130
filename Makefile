# curate: two commands on a fresh machine.
#   make dataset   build the dataset (creates .venv and installs what it needs)
#   make test      run the test suite (likewise)
# A stamp file per extras set makes the second run start at once; editing setup.cfg refreshes it.

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip --disable-pip-version-check -q
SHARED    ?= ../shared
WORK      ?= work
# The pipeline `make dataset` runs (pipelines/*.toml): a dump given as DANBOORU=DIR gets the seed
# recipe; without one, the shared 50-post sample where it exists (a developer's checkout), else a
# small polite sample fetched from the Danbooru API (needs network; says what to do without it).
ifdef DANBOORU
PIPELINE  ?= danbooru2018-portraits
else ifneq ($(wildcard $(SHARED)/data/danbooru-sample/metadata),)
PIPELINE  ?= sample
DANBOORU  := $(SHARED)/data/danbooru-sample
else
PIPELINE  ?= danbooru-api-sample
endif
DATASET   ?= $(WORK)/$(PIPELINE)/dataset
CONFIG    ?= smoke
RUNS      ?= $(WORK)/runs
# every core, a test file at a time per worker (module fixtures built once); PYTEST_ARGS= for one process
PYTEST_ARGS ?= -n auto --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help venv dev cascades dataset train test bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: DANBOORU=DIR (a Danbooru dump), PIPELINE=name (now: $(PIPELINE)), WORK=DIR (outputs)"
	@echo "             DATASET=DIR (records for train; now: $(DATASET)), CONFIG=smoke|stylegan-512x256"

$(VENV)/.stamp-%: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[$*]'
	@touch $@

venv: $(VENV)/.stamp-tf  ## create .venv with curate and TensorFlow (what dataset and train need)
dev: $(VENV)/.stamp-dev  ## create .venv with curate and the test tools

# The anime-face cascade comes from the package registry (see cascades/README.md); the script checks
# the sha256 first, so with a good copy present this is instant.
cascades:  ## fetch and verify cascades/lbpcascade_animeface.xml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m curate.crop.cascades fetch

dataset: venv cascades  ## run PIPELINE (see variables below): filter, crop, score, pack into WORK/PIPELINE
	$(if $(DANBOORU),DANBOORU="$(DANBOORU)") WORK="$(WORK)" $(VENV)/bin/curate run $(PIPELINE)
	@echo "make dataset: records in $(DATASET); look: $(VENV)/bin/curate report $(WORK)/$(PIPELINE)"

train: venv  ## train CONFIG (default smoke: minutes on a CPU) on DATASET (built first if missing)
	@test -f "$(DATASET)/dataset.json" || $(MAKE) dataset
	$(VENV)/bin/curate train "$(DATASET)" --config $(CONFIG) --runs-dir $(RUNS)

# pytest exits 5 when it collected no test: that is "nothing to run", not a failure.
test: dev cascades  ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS) || { rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; else exit $$rc; fi; }

bench: dev  ## run the benchmarks in bench/ (slow; prints figures, asserts nothing)
	$(PY) bench/filter.py
	$(PY) bench/crop.py
	$(PY) bench/detectors.py
	$(PY) bench/score.py
	$(PY) bench/review.py
	$(PY) bench/review_rank.py
	$(PY) bench/pack.py
	$(PY) bench/dedup.py
	$(PY) bench/dedup_threshold.py
	$(PY) bench/beam.py
	$(PY) bench/train.py

clean:  ## remove .venv and outputs
	rm -rf $(VENV) $(WORK) *.egg-info
