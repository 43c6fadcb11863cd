"""The base policy: from a GGUF file shipped in a package (offline default), a tiny Llama made
from scratch (tests), a local folder, or a Hub id. Always saved as a plain transformers folder
so every later stage (TRL, vLLM) reads the same thing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dpolab.locate import gguf_path


def load_package_tokenizer(model_cfg: dict):
    path = gguf_path(model_cfg)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def build_scratch_model(model_cfg: dict, tokenizer) -> LlamaForCausalLM:
    """A small Llama with random weights (seeded), sharing the package model's tokenizer."""
    scratch = model_cfg["scratch"]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=scratch["hidden_size"],
        intermediate_size=scratch["intermediate_size"],
        num_hidden_layers=scratch["num_hidden_layers"],
        num_attention_heads=scratch["num_attention_heads"],
        num_key_value_heads=scratch["num_attention_heads"],
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(scratch["seed"])
    return LlamaForCausalLM(config).to(torch.float32)


def prepare_base_model(model_cfg: dict, out_dir: Path) -> dict:
    """Materialise the configured base model as a plain fp32 folder; return its card."""
    source = model_cfg["source"]
    remote = {"trust_remote_code": bool(model_cfg["trust_remote_code"])}
    if source == "package":
        path = gguf_path(model_cfg)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        # GGUF weights are de-quantised on load; drop the quantizer so the folder is a plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        origin = str(path)
    elif source == "scratch":
        tokenizer = load_package_tokenizer(model_cfg)
        model = build_scratch_model(model_cfg, tokenizer)
        origin = f"scratch from {gguf_path(model_cfg).name} tokenizer"
    else:  # local folder or hub id: the same transformers call
        kwargs = {"revision": model_cfg["revision"]} if model_cfg["revision"] else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_cfg["path"], **remote, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(model_cfg["path"], dtype=torch.float32, **remote, **kwargs)
        except OSError as error:
            where = "the Hub (no network, or HF_HUB_OFFLINE set?)" if source == "hub" else "its folder"
            raise OSError(f"model.path: cannot load {model_cfg['path']!r} from {where}: {error}") from error
        origin = model_cfg["path"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    card = {
        "source": source,
        "origin": origin,
        "architecture": type(model).__name__,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "vocab_size": len(tokenizer),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
    }
    (out_dir / "dpolab_card.json").write_text(json.dumps(card, indent=2))
    return card


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(model_dir: Path | str) -> bool:
    """Whether a policy folder holds a LoRA adapter (PEFT's adapter_config.json) rather than full weights."""
    return (Path(model_dir) / ADAPTER_CONFIG).is_file()


def adapter_rank(model_dir: Path | str) -> int:
    return int(json.loads((Path(model_dir) / ADAPTER_CONFIG).read_text())["r"])


def load_policy(
    model_dir: Path,
    trust_remote_code: bool = False,
    *,
    dtype: str = "float32",
    quantization_config=None,
    base_dir: Path | None = None,
):
    """A policy and its tokenizer. A LoRA adapter folder is loaded on its base: `base_dir` (the
    study's SFT model, which the workflow knows) or the base path the adapter recorded."""
    if is_adapter(model_dir):
        from peft import PeftModel

        base = base_dir or json.loads((Path(model_dir) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
        model, _ = load_policy(base, trust_remote_code, dtype=dtype, quantization_config=quantization_config)
        model = PeftModel.from_pretrained(model, str(model_dir))
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            quantization_config=quantization_config,
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@torch.no_grad()
def completion_logps(
    model, prompt_ids: list[list[int]], completion_ids: list[list[int]], batch_size: int = 32
) -> np.ndarray:
    """Summed log-probs of each completion given its prompt, on the exact sampled token ids."""
    model.eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = [
            p + c for p, c in zip(prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size])
        ]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
        ids, attention = ids.to(device), attention.to(device)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        for i, (p, c) in enumerate(
            zip(prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size])
        ):
            # token t+1 is predicted at position t: completion tokens sit at positions len(p)..len(p)+len(c)-1
            out.append(float(token_logps[i, len(p) - 1 : len(p) - 1 + len(c)].sum()))
    return np.array(out)


def make_base_model(model_cfg: dict, model_dir: Path, *, log: bool = True) -> dict:
    """The base_model job: prepare_base_model into model_dir; with `log`, its parameter count and
    card to the active MLflow run. Returns the card."""
    card = prepare_base_model(model_cfg, model_dir)
    if log:
        import mlflow

        mlflow.log_metric("parameters", card["parameters"])
        mlflow.log_dict(card, "model_card.json")
    return card
