# kickvision: `make run` trains on the embedded demo catalog; `make test` runs the test suite
# (`make test-fast`: the unit tests alone, under a minute).
# Both create .venv and install the pinned dependencies on first use, then reuse it.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export ZENML_ANALYTICS_OPT_IN := false
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1

.PHONY: install run update test test-fast lint ui clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed  ## the pinned venv only (CI jobs that run kickvision commands)

run: $(BIN)/.installed  ## demo catalog -> training pipeline -> MLflow registry (state in ./.kickvision/)
	$(BIN)/kickvision demo

update: $(BIN)/.installed  ## after `make run`: a demo catalog drop with a new category -> update pipeline (EWC + replay)
	$(BIN)/kickvision demo-drop --out kickvision-drop-1
	$(BIN)/kickvision update --drop kickvision-drop-1

test: $(BIN)/.installed  ## unit + integration (real ZenML + MLflow) + real-data smoke tests
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed  ## unit tests only (no pipelines, servers or real data): the lane to run while editing
	$(BIN)/python -m pytest -q -m "not integration and not realdata"

lint: $(BIN)/.installed
	$(BIN)/ruff check .

ui: $(BIN)/.installed  ## MLflow UI on the tracking store that `make run` used
	$(BIN)/kickvision ui

clean:  ## remove run state and the demo catalog and drops (keeps .venv)
	rm -rf .kickvision kickvision-demo kickvision-drop-*
