# Atelier — two commands do all the set-up on a fresh machine:
#   make run    create the environment if needed, then serve the studio on http://127.0.0.1:7860
#   make test   create the environment (+ headless Chromium) if needed, then run the test-suite
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test test-all screenshots bench env env-dev chromium clean-models

run: env
	$(PY) app.py $(ARGS)

test: env-dev chromium
	$(PY) -m pytest $(ARGS)

# slow (full-size shapes) tests as well; GPU/real-weight tests still need -m gpu / -m real_weights
test-all: env-dev chromium
	$(PY) -m pytest -m "not gpu and not real_weights" $(ARGS)

screenshots: env-dev chromium
	ATELIER_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest -m browser $(ARGS)

bench: env
	$(PY) -m benchmarks.run $(ARGS)

env:
	@scripts/setup.sh

env-dev:
	@scripts/setup.sh --dev

chromium:
	@scripts/setup_chromium.sh

clean-models:
	rm -rf models/tiny
