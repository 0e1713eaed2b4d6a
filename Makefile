# The one entry point for chores. `make` runs lint and tests.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := check
.PHONY: check install install-bench system-deps lint format test demo serve bench bench-quality bench-speed bench-scale bench-recorded bench-context train corpus clean

check: lint test

# A fresh machine: a virtual environment, the CPU build of torch *first* (so pip never
# pulls a multi-GB CUDA build), the project with its test and ray extras (the Ray ingest
# tests run in CI), tinysoundfont without its pyaudio dependency (pyaudio does not build here
# and is not needed), and the pitch tracker pesto-pitch without torchaudio (whose wheels pin
# another torch; pesto needs it only to read files: see encoder/pitch.py).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	$(BIN)/python -m pip install -q --no-deps tinysoundfont==0.3.7
	$(BIN)/python -m pip install -q --no-deps pesto-pitch==2.0.1
	touch $(STAMP)

install: $(STAMP)

# The speed benchmark compares against Wav2Vec2 (random weights, built from its config) + FAISS.
BENCH_STAMP := $(VENV)/.installed-bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

install-bench: $(BENCH_STAMP)

# Debian packages the tests need: chromium for the browser tests, espeak-ng for
# synthesized speech in the out-of-library checks. Installed only when missing.
system-deps:
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_structure.py --strict
	$(BIN)/mypy cadenza encoder retrieval assistant bench

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: install
	$(BIN)/cadenza demo

serve: install
	$(BIN)/cadenza serve

# The training corpus: music21 renders, plus real recordings when REAL=DIR is given (one folder per
# source, filled by scripts/fetch_real_music.sh DIR; the held-out sources are left out by the build).
# FluidR3_GM.sf2 (Debian fluid-soundfont-gm, 141 MB) adds a second-soundfont view of every work when it is
# installed (apt-get install fluid-soundfont-gm); without it the build uses TimGM6mb alone and says so.
corpus: install
	$(BIN)/cadenza corpus build $(if $(REAL),--real $(REAL))

train: install
	$(BIN)/cadenza train

bench: install-bench
	$(BIN)/cadenza bench all

bench-quality: install-bench
	$(BIN)/cadenza bench quality

bench-speed: install-bench
	$(BIN)/cadenza bench speed

bench-scale: install-bench
	$(BIN)/cadenza bench scale

# On the demo library of CADENZA_HOME (built first when missing).
bench-context: install-bench
	$(BIN)/cadenza bench context

# Real recordings are not shipped: point AUDIO at a folder of them (see bench/README.md).
bench-recorded: install-bench
	@test -n "$(AUDIO)" || { echo "give a folder of recorded music: make bench-recorded AUDIO=DIR"; exit 2; }
	$(BIN)/cadenza bench recorded --audio "$(AUDIO)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
