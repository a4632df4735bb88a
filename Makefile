# The README's two set-up commands: `make demo` and `make test`.
# Each creates .venv, installs neurocl with its dev extras, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test workers; each uses one BLAS/torch thread so they do not fight over the cores.
WORKERS ?= 2

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m neurocl run protocols/split-digits.yaml --out demo-out
	$(PY) -m neurocl run protocols/split-digits.yaml "rules=[joint]" --out demo-out
	$(PY) -m neurocl figures demo-out --out demo-out/figures
	@echo "Results in demo-out/runs, figures in demo-out/figures"

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup -q

clean:
	rm -rf $(VENV) demo-out
