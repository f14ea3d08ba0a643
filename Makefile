# The two commands that do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Set for CPU-only torch wheels, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

.PHONY: venv test demo system-deps bench lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned with torchvision, so nothing that depends on it pulls another build
	$(BIN)/pip install -q -r requirements/torch.txt $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q -e examples/segboard-example-plugin
	touch $@

system-deps:
	bash scripts/system-deps.sh

test: lint system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff over segcore, worker and webapp, then mypy (strict) over segcore; both configured in pyproject.toml.
# mypy caches in .mypy_cache: about 30 s cold on 2 cores, 1 s warm.
lint: venv
	$(BIN)/ruff check segcore worker webapp
	$(BIN)/mypy segcore

demo: venv
	bash scripts/demo.sh

bench: venv
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
