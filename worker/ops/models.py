"""`kcw models pull`: download a Hugging Face model repo into models/hf/ for vLLM."""

from __future__ import annotations

from pathlib import Path

from worker.errors import ModelPullError

__all__ = ["ModelPullError", "pull_model"]

# What vLLM needs from a repo: config, weights in safetensors, tokenizer and chat template.
PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def pull_model(repo_id: str, root: Path, token: str | None = None) -> Path:
    """Download `repo_id` into `root/<name>` and return that folder."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HFValidationError,
            RepositoryNotFoundError,
        )
    except ImportError:
        raise ModelPullError(
            "kcw models pull needs huggingface_hub: pip install 'kc-worker[hf]'"
        ) from None
    target = root / repo_id.rstrip("/").split("/")[-1]
    try:
        snapshot_download(repo_id, local_dir=target, token=token or None, allow_patterns=PATTERNS)
    except GatedRepoError:
        raise ModelPullError(
            f"{repo_id} is gated: accept its licence on the Hub and set HF_TOKEN in .env"
        ) from None
    except RepositoryNotFoundError:
        raise ModelPullError(
            f"{repo_id} was not found (or is private): check the id, or set HF_TOKEN in .env"
        ) from None
    except HFValidationError as exc:
        raise ModelPullError(f"{repo_id!r} is not a repo id like 'org/name': {exc}") from None
    except Exception as exc:  # the hub client raises many kinds for a network it cannot reach
        raise ModelPullError(
            f"could not download {repo_id}: pulling needs network access to the Hugging Face "
            f"Hub ({exc.__class__.__name__}). Offline, copy a model folder (config.json, "
            "*.safetensors, tokenizer files) into models/hf/ yourself, or run `make models-hf` "
            "for the default model."
        ) from None
    if not any(target.glob("*.safetensors")):
        raise ModelPullError(f"{repo_id} has no .safetensors weights; vLLM here needs safetensors")
    return target
