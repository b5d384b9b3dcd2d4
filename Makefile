# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.0.1

.PHONY: install demo test lint bench crds lock clean

install: $(VENV)/.installed

# Exact pins (constraints.txt) keep pip from backtracking: a fresh install takes about a minute.
$(VENV)/.installed: pyproject.toml constraints.txt
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip==$(PIP_VERSION) && \
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[trainer,test]' && \
	echo "make install: .venv ready in $$(( $$(date +%s) - start )) s"
	@touch $@

# The local fine-tuning demo arrives with `kubetune run --local`; until then say so.
demo: install
	@echo "make demo: the local fine-tuning demo (kubetune run --local) is not built yet."
	@echo "Meanwhile: .venv/bin/kubetune validate examples/ and .venv/bin/kubetune crds"

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

# Our training loop vs a plain Hugging Face Trainer on CPU, a few minutes (bench/README.md).
bench: install
	$(BIN)/python bench/trainer_throughput.py

# Generated from the pydantic API types; tests fail when the committed files drift.
crds: install
	$(BIN)/kubetune crds --write crds/
	$(BIN)/kubetune schema trainer-config > docs/trainer-config.schema.json

# Re-pin after a dependency change in pyproject.toml.
lock:
	rm -rf /tmp/kubetune-lock && $(PYTHON) -m venv /tmp/kubetune-lock
	/tmp/kubetune-lock/bin/pip install -q --upgrade pip==$(PIP_VERSION)
	/tmp/kubetune-lock/bin/pip install -q -e '.[trainer,test]'
	( head -2 constraints.txt; /tmp/kubetune-lock/bin/pip freeze --exclude-editable \
	  | sed 's/+cpu$$//' ) > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
