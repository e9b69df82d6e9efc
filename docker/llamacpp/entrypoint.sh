#!/bin/sh
# Say which hardware the llama.cpp server will use, then run the launcher (which starts
# llama-server, or llama-cpp-python's server with LLAMACPP_ENGINE=python).
set -eu

log() { printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

# Can this image's llama.cpp use a GPU? llama-server lists the GPUs its build can drive
# ("  CUDA0: NVIDIA ..."), or "(none)"; llama-cpp-python answers through its own binding.
gpu_build() {
    if [ "${LLAMACPP_ENGINE:-server}" = python ]; then
        python3 -c 'import llama_cpp; print(llama_cpp.llama_supports_gpu_offload())' 2>/dev/null || echo False
    elif "${LLAMA_SERVER_BIN:-llama-server}" --list-devices 2>/dev/null | grep -q '^  [A-Za-z][^ ]*: '; then
        echo True
    else
        echo False
    fi
}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    log "NVIDIA GPU found: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1)"
    hardware=nvidia
elif [ -e /dev/kfd ] && [ -d /dev/dri ]; then
    log "AMD GPU found (/dev/kfd and /dev/dri are present)"
    hardware=amd
else
    log "no GPU found: running on the CPU ($(nproc) cores); GPU acceleration is unavailable"
    hardware=cpu
fi

if [ "$hardware" != cpu ] && [ "$(gpu_build)" != True ]; then
    log "this image's llama.cpp (LLAMACPP_ENGINE=${LLAMACPP_ENGINE:-server}) sees no GPU: it was built without GPU support (rebuild it with CMAKE_ARGS, see Dockerfile.llamacpp), or the container cannot reach the GPU"
fi
if [ "$hardware" = cpu ] && [ "${N_GPU_LAYERS:-0}" != 0 ]; then
    log "N_GPU_LAYERS=${N_GPU_LAYERS} but there is no GPU: the layers stay on the CPU"
fi

exec python3 /opt/kcw/launcher.py "$@"
