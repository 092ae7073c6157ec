# `make demo` and `make test` work on a fresh clone: they build .venv themselves.
# torch is pinned to the CPU wheel that lies on this project's machines (DEVELOPERS.md);
# an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trillium-installed

.PHONY: install demo test test-fast bench dashboard clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trillium demo

# The whole suite, PostgreSQL cases included (they fail, not skip, when the server is down).
test: $(STAMP)
	TRILLIUM_REQUIRE_POSTGRES=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/trillium bench core --json benchmarks/results/core.json

dashboard: $(STAMP)
	$(VENV)/bin/trillium dashboard

clean:
	rm -rf $(VENV) .trillium .pytest_cache
