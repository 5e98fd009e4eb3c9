# The two commands: `make bench` (default suites -> results.db -> summary) and `make test`.
# Both bootstrap .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch pair that installs from this machine's disk; override with TORCH_SPEC= to let pip choose.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DB     ?= results.db
BUDGET ?= smoke
WORKERS ?= 2
SUITES ?= suites
STAMP  := $(VENV)/.installed

.PHONY: bench test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q $(TORCH_SPEC); fi
	$(BIN)/python -m pip install -q -e .
	@touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python -m pytest $(SUITES) -p no:cacheprovider -n $(WORKERS) --dist worksteal \
		--bench-db $(DB) --bench-budget $(BUDGET) -q -rfE
	$(BIN)/bench report --db $(DB)
	@echo
	@echo "Browse the results:  $(BIN)/datasette $(DB)    (then open http://127.0.0.1:8001)"

test: $(STAMP)
	$(BIN)/python -m pytest tests -p no:cacheprovider -n $(WORKERS) -q -rfEs

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks build *.egg-info
