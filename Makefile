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
	$(PY) -m neurocl run protocols/split-digits.yaml "rules=[replay]" --out demo-out
	$(PY) -m neurocl run protocols/split-digits.yaml "rules=[joint]" --out demo-out
	$(PY) -m neurocl figures demo-out --out demo-out/figures
	@echo "Results in demo-out/runs, figures in demo-out/figures"

# The data the tests train on: found in $NEUROCL_DATA, ../shared/data (beside the checkout),
# ~/.cache/neurocl or /usr/share/datasets, else fetched (checksummed) into ~/.cache/neurocl.
SHARED_DATA := $(abspath ../shared/data)
TEST_DATA_ENV = NEUROCL_DATA="$${NEUROCL_DATA:-$$([ -d $(SHARED_DATA) ] && echo $(SHARED_DATA))}"

test: $(STAMP)
	@export $(TEST_DATA_ENV); \
	$(PY) -m neurocl data fetch --if-missing --no-progress mnist-t10k || { \
	  echo "make test: the tests train on the real MNIST test images (mnist-t10k), which are"; \
	  echo "neither here nor downloadable. Put the folder mnist-t10k/ (its two .gz files) in"; \
	  echo "$(SHARED_DATA)/ or in a directory named by NEUROCL_DATA, then run make test again."; \
	  exit 2; } >&2; \
	$(PY) -m neurocl data fetch --if-missing --no-progress fashion-mnist || \
	  echo "make test: without Fashion-MNIST the test that trains on it is skipped" \
	       "(apt-get install dataset-fashion-mnist, or neurocl data fetch fashion-mnist)" >&2; \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup -q

clean:
	rm -rf $(VENV) demo-out
