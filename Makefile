# Two entry points: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv and install everything on first use; later runs reuse it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import sphinx_vi, torch, transformers, open_clip" 
	touch $(STAMP)

setup: $(STAMP)

# Main job: until the studio lands, ground an object on a shipped image with the tiny model.
run: $(STAMP)
	$(BIN)/python -m sphinx_vi detect --model tiny --image sphinx_vi/assets/examples/shapes.png "hình tròn màu đỏ"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) .pytest_cache
