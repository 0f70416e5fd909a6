# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow bench digits notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision are pinned to the builds available offline here (see README)
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# Search + analysis on the shipped real digits caches and synthetic ResNet-152/50-shaped
# caches, each with a held-out split (Fig. 5 on ResNet-50, as in the paper).
# `make digits` re-creates the digits run.
demo: $(STAMP)
	$(PY) -m analysis data/digits/cache-calibration.parquet --test data/digits/cache-test.parquet \
		--synthetic resnet152 --synthetic resnet50 --synthetic-test-samples 50000 --compare-on 2 --out reports/demo

# Default test run (< 10 min on 2 cores); slow tests are opt-in.
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q || [ $$? -eq 5 ]

bench: $(STAMP)
	$(PY) benchmarks/cache.py
	$(PY) benchmarks/evaluate.py --searched
	$(PY) benchmarks/search.py
	$(PY) benchmarks/search_quality.py
	$(PY) benchmarks/guarantees.py
	$(PY) benchmarks/synthetic.py
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/runtime.py

# Execute the notebooks and store them with their outputs (tests check the stored tables are current).
notebooks: $(STAMP)
	$(PY) -m analysis.run_notebooks

# Re-create the shipped digits run (backbone, exits, caches) from scratch.
digits: $(STAMP)
	$(PY) -m extract digits --out data/digits

clean:
	rm -rf reports .pytest_cache
