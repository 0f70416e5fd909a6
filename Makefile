# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow bench digits notebooks clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# pyproject.toml holds ranges; constraints.txt the exact tested versions (torch/torchvision:
	# the builds available offline here, see README "Install")
	$(PY) -m pip install --quiet -e ".[all]" -c constraints.txt
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

# Re-create the shipped digits run (backbone, exits, caches) from scratch: built in
# data/digits.new (a run already in data/digits would be reused, not rebuilt) and
# moved into place once complete. The shipped run repeats bit for bit with the same
# torch build on a CPU of the same instruction set (it was built with AVX512);
# `make digits PORTABLE=1` pins every CPU-dependent kernel (extract.digits.PORTABLE_ENV)
# for a run that repeats on any x86-64 CPU, with other numbers than the shipped ones.
# See docs/extract.md, "Reproducing `data/digits`".
PORTABLE ?=
digits: $(STAMP)
	rm -rf data/digits.new
	$(if $(PORTABLE),ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE) $(PY) -m extract digits --out data/digits.new
	rm -rf data/digits && mv data/digits.new data/digits

clean:
	rm -rf reports .pytest_cache
