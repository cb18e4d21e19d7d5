# One command installs, one runs the tests. Both create ./.venv with the interpreter
# in $(PYTHON) (3.11 or newer).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install serve test lint

$(BIN)/hyper-ls: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/hyper-ls

serve: install
	$(BIN)/hyper-ls serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint label-studio
	$(BIN)/pytest

# A real Label Studio server for the tests marked `label_studio`, in its own ./.venv-ls
# (about 1 GB; the script does nothing when the pinned version is there).
.PHONY: label-studio
label-studio:
	PYTHON=$(PYTHON) bash scripts/install_label_studio.sh
