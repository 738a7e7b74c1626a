# The two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench bench-zoo bench-rtl bitstreams icarus chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

icarus:
	@command -v iverilog >/dev/null || { \
	  echo "installing Icarus Verilog (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; }

# Headless Chromium renders `flexigan report`'s page in tests/test_report.py.
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

demo: $(STAMP)
	$(BIN)/python examples/digits/demo.py --out build/demo

test: $(STAMP) icarus chromium
	$(BIN)/pytest -q -m "not slow"

test-slow: $(STAMP) icarus chromium
	$(BIN)/pytest -q -m slow -n 2

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-zoo: $(STAMP)
	$(BIN)/python benchmarks/zoo.py

bitstreams: $(STAMP)
	$(BIN)/python benchmarks/bitstreams.py

bench-rtl: $(STAMP) icarus
	$(BIN)/python benchmarks/rtl.py

clean:
	rm -rf build .pytest_cache
