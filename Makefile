# One command installs, one runs the tests. Both create ./.venv with the interpreter
# in $(PYTHON) (3.11 or newer): `make serve` installs only what serving needs, `make test`
# adds the test extra (pytest, ruff, schemathesis, the PostgreSQL and Redis drivers).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test serve test lint

$(BIN)/hyper-ls: pyproject.toml
	@echo "installing hyper-ls-backend into $(VENV) (runtime dependencies, a minute or two) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-extra: $(BIN)/hyper-ls
	@echo "installing the test tools into $(VENV) (hyper-ls-backend[test]) ..."
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/hyper-ls

install-test: $(VENV)/.test-extra

serve: install
	$(BIN)/hyper-ls serve

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint label-studio
	$(BIN)/pytest

# A real Label Studio server for the tests marked `label_studio`, in its own ./.venv-ls
# (about 1 GB; the script does nothing when the pinned version is there).
.PHONY: label-studio
label-studio:
	PYTHON=$(PYTHON) bash scripts/install_label_studio.sh
