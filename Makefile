# Two commands on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
PYTEST_WORKERS ?= 2
# Parallelism comes from processes (pytest-xdist workers, joblib seeds); threaded BLAS on top of them
# oversubscribes the cores (measured: a 768x768 mat-vec 60x slower on a busy 2-core machine).
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test bench bench-serve lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# One stamp per set of extras; reinstalls when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[$(subst +,$(comma),$*)]"
	touch $@

comma := ,

install: $(VENV)/.stamp-cli

demo: $(VENV)/.stamp-cli
	$(BIN)/banditroute demo

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider

bench: $(VENV)/.stamp-test+bench
	$(BIN)/python -m benchmarks

# The router service under loopback load (routes/s, p50/p99 latency with feedback interleaved).
bench-serve: $(VENV)/.stamp-test+serve
	$(BIN)/python -m benchmarks.bench_serve

lint: $(VENV)/.stamp-test+lint
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
