# The two entry points of the README: `make demo` and `make test`. Both create and use
# .venv/ in the checkout on first run.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-all lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)

demo: setup
	$(BIN)/vipet demo --out demo_out

test: setup
	$(BIN)/pytest

test-all: setup
	$(BIN)/pytest -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# docs/benchmarks.md's figures; needs a phantom, its cache and a trained model
# (benchmarks/all.sh says which): make bench MODEL=runs/cpu-small/model DATA=/tmp/ph600
MODEL ?= runs/cpu-small/model
DATA ?= /tmp/ph600
CACHE ?= /tmp/cache64
bench: setup
	PYTHON=$(BIN)/python bash benchmarks/all.sh $(MODEL) $(DATA) $(CACHE)

clean:
	rm -rf demo_out .pytest_cache .ruff_cache
