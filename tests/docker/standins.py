"""Names of the locally built images the Docker tier runs on (`scripts/docker-env bases`)."""

STANDIN_REDIS = "local/redis:7-standin"
STANDIN_PYTHON = "local/python-base:bookworm"
IMAGE = "kc-worker-llamacpp:latest"
VLLM_CPU_IMAGE = "kc-worker-vllm-cpu:latest"
