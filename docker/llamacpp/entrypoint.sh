#!/bin/sh
# Say which hardware the llama.cpp server will use, then run the launcher.
set -eu

log() { printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

gpu_build=$(python3 -c 'import llama_cpp; print(llama_cpp.llama_supports_gpu_offload())' 2>/dev/null || echo False)

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

if [ "$hardware" != cpu ] && [ "$gpu_build" != True ]; then
    log "this image's llama.cpp was built without GPU support: rebuild it with CMAKE_ARGS (see Dockerfile.llamacpp)"
fi
if [ "$hardware" = cpu ] && [ "${N_GPU_LAYERS:-0}" != 0 ]; then
    log "N_GPU_LAYERS=${N_GPU_LAYERS} but there is no GPU: the layers stay on the CPU"
fi

exec python3 /opt/kcw/launcher.py "$@"
