# The two commands that do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Set for CPU-only torch wheels, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

.PHONY: venv test demo demo-cli system-deps bench lint clean

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

# the dashboard on a demo workspace filled while it runs (docs/demo.md); DEMO_ARGS=--reset builds it again
DEMO_ARGS ?=
demo: venv
	bash scripts/demo.sh $(DEMO_ARGS)

# the fast recipe trained from the command line
demo-cli: venv
	bash scripts/demo.sh cli

bench: venv
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
