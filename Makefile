# Two commands: `make run` sets up and starts the app, `make test` sets up and runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: run test bench setup setup-dev lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

run: setup
	$(BIN)/streamlit run app.py --server.port $(PORT)

test: setup-dev
	$(BIN)/python -m pytest

lint: setup-dev
	$(BIN)/ruff check .

bench: setup-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
