#!/bin/sh
# Map kc-worker's settings to vLLM's OpenAI server flags, then run it.
set -eu

set -- --model "${MODEL_NAME:-/models/model}" \
    --host "${HOST:-0.0.0.0}" \
    --port "${PORT:-8000}" \
    --tensor-parallel-size "${TENSOR_PARALLEL_SIZE:-1}" \
    --max-model-len "${MAX_MODEL_LEN:-4096}" \
    "$@"
if [ -n "${GPU_MEMORY_UTILIZATION:-}" ]; then
    set -- "$@" --gpu-memory-utilization "$GPU_MEMORY_UTILIZATION"
fi
if [ -n "${SERVED_MODEL_NAME:-}" ]; then
    set -- "$@" --served-model-name "$SERVED_MODEL_NAME"
fi
if [ -n "${DTYPE:-}" ]; then
    set -- "$@" --dtype "$DTYPE"
fi
if [ -n "${LLM_API_KEY:-}" ]; then
    # Passed through the environment, not argv, so it does not show in `ps`.
    export VLLM_API_KEY="$LLM_API_KEY"
fi

printf 'entrypoint: vllm serving %s on %s:%s\n' "${MODEL_NAME:-/models/model}" "${HOST:-0.0.0.0}" "${PORT:-8000}"
# VLLM_EXTRA_ARGS: more flags, split on spaces (e.g. "--enforce-eager --dtype float32").
# shellcheck disable=SC2086
exec python3 -m vllm.entrypoints.openai.api_server "$@" ${VLLM_EXTRA_ARGS:-}
