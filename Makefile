# The README's commands. Everything installs into .venv; nothing touches the system Python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fsbench-installed
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Train on the synthetic default, then evaluate the softmax-family heads and print the table.
demo: $(STAMP)
	$(BIN)/python train.py
	$(BIN)/python evaluate.py

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
