# Every target sets up .venv from requirements.txt first when needed (a fresh machine needs nothing else).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help setup run stop simulate test lint train bench clean

help:            ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned dependencies
run: $(STAMP)    ## the full pipeline, then dashboard :8502, MLflow UI :5000, chat UI :8501 (Ctrl+C stops them)
	$(PY) mlops_pipeline.py $(ARGS)
stop: $(STAMP)   ## stop services left running by `make run ARGS=--detach`
	$(PY) mlops_pipeline.py --stop
simulate: $(STAMP)  ## a minute of realistic traffic through the deployed bot (ARGS=--drift to shift it)
	$(PY) -m mlops.monitoring.simulate --qps 20 --duration 60 $(ARGS)
test: $(STAMP)   ## the whole test suite
	$(PY) -m pytest $(ARGS)
lint: $(STAMP)   ## ruff (print statements only in CLIs: rule T201)
	$(PY) -m ruff check .
train: $(STAMP)  ## train all four models and log them to MLflow
	$(PY) mlops/scripts/train_chatbot_models.py $(ARGS)
bench: $(STAMP)  ## benchmarks: training, quality, deploy, fast path, serving -> docs/BENCHMARKS.md
	$(PY) -m mlops.bench $(ARGS)
clean:           ## remove generated models, MLflow store and results (keeps .venv)
	rm -rf models mlruns mlops/results/*.json
