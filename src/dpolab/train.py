"""Training with TRL: SFT (SFTTrainer), shared reference log-probs (DPOTrainer's own
precompute), DPO over our loss registry (a DPOTrainer subclass), and the rule variants' own
trainers: KTO (KTOTrainer) and ORPO (TRL's experimental ORPOTrainer)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from dpolab import losses
from dpolab.models import load_policy
from dpolab.settings import DPOSettings, PeftSettings, SFTSettings, TrainingSettings, TrainSettings

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")

TRAINER_DEFAULTS = dict(  # no checkpoints mid-run (the job's outputs are the contract), no progress bars in logs
    dataloader_num_workers=0,
    save_strategy="no",
    disable_tqdm=True,
)


def default_training(use_cpu: bool, peft: PeftSettings | None = None) -> TrainingSettings:
    """The training settings a study leaves at their defaults: fp32 on the CPU, bf16 on a GPU.
    (TRL's own defaults, bf16 with gradient checkpointing, fail or crawl on a CPU.)"""
    return TrainingSettings(device="cpu" if use_cpu else "cuda", lora=peft is not None)


def world_size() -> int:
    """Training processes of this job (accelerate launch sets WORLD_SIZE; 1 otherwise)."""
    import os

    return int(os.environ.get("WORLD_SIZE", 1))


def _trainer_args(
    cfg: TrainSettings,
    out_dir: Path,
    *,
    seed: int,
    use_cpu: bool,
    mlflow_active: bool,
    training: TrainingSettings | None = None,
) -> dict:
    """TrainingArguments shared by every trainer: the section's batch (split over the job's
    processes), steps and schedule, and the precision settings."""
    training = training or default_training(use_cpu)
    processes = world_size()
    if cfg.batch_size % processes:
        raise ValueError(
            f"{cfg.section}.batch_size: {cfg.batch_size} does not split over {processes} training processes"
        )
    return dict(
        output_dir=str(out_dir / "trainer"),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size // processes,
        gradient_accumulation_steps=getattr(cfg, "gradient_accumulation_steps", 1),
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        seed=seed,
        use_cpu=use_cpu,
        report_to=["mlflow"] if mlflow_active else [],
        # Under DDP every parameter takes part in every step: no search for unused ones.
        ddp_find_unused_parameters=False,
        **training.trainer_args,
        **TRAINER_DEFAULTS,
    )


def check_device_can(training: TrainingSettings, peft: PeftSettings | None = None) -> None:
    """At a job's start, on the node that trains: what the config check could not see from the
    submitting machine (bf16 on this GPU, the packages of QLoRA)."""
    import importlib.util

    if training.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device: cuda, but this node has no CUDA GPU visible to torch (check the job's GPU request "
                "and CUDA_VISIBLE_DEVICES)"
            )
        if training.precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise RuntimeError(
                f"training.precision: bf16 is not supported by this node's GPU ({torch.cuda.get_device_name()}); "
                "set training.precision: fp16"
            )
    if peft is not None and peft.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("peft.load_in_4bit: QLoRA needs the bitsandbytes package on the GPU nodes (envs/gpu.txt)")


def load_trainable(model_dir: Path, training: TrainingSettings, peft: PeftSettings | None = None):
    """The model a training job starts from, in the settings' dtype (4-bit NF4 for QLoRA)."""
    check_device_can(training, peft)
    quantization = None
    if peft is not None and peft.load_in_4bit:
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, training.torch_dtype),
        )
    return load_policy(model_dir, dtype=training.torch_dtype, quantization_config=quantization)


def save_model(trainer, tokenizer, model_dir: Path) -> None:
    """Weights as safetensors with config and tokenizer (a LoRA policy: its adapter, MBs); the
    trainer's `training_args.bin` (a pickle of TrainingArguments) is replaced by its JSON form: no
    pickle leaves a job. Every process takes part in the save (a sharded model is gathered);
    rank 0 writes."""
    trainer.save_model(str(model_dir))
    if not trainer.accelerator.is_main_process:
        return
    tokenizer.save_pretrained(model_dir)
    (model_dir / "training_args.bin").unlink(missing_ok=True)
    (model_dir / "training_args.json").write_text(trainer.args.to_json_string())


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    """Where a policy's checkpoint at `step` goes: a policy folder of its own (`step~n/model`),
    which the generate and evaluate rules read as they read the final policy's."""
    return out_dir / f"step~{step}" / "model"


class StepSnapshots(TrainerCallback):
    """Saves the policy (full weights, or its LoRA adapter) after each of `steps`, as the final
    model is saved (save_model: safetensors, tokenizer, no pickle). The Trainer's own checkpoints
    are not used: they carry the optimizer and RNG states as pickles, which no job writes."""

    def __init__(self, trainer, tokenizer, steps: tuple[int, ...], out_dir: Path):
        self.trainer, self.tokenizer, self.steps, self.out_dir = trainer, tokenizer, frozenset(steps), out_dir

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            save_model(self.trainer, self.tokenizer, checkpoint_dir(self.out_dir, state.global_step))
        return control


def train_and_save(trainer, tokenizer, out_dir: Path, checkpoints: tuple[int, ...] = ()) -> dict:
    """Train with tokens/s and MFU measured (dpolab.perf), saving the policy at `checkpoints`
    (training steps) on the way, then `finish_training`."""
    from dpolab.perf import attach_throughput

    attach_throughput(trainer)
    if checkpoints:
        trainer.add_callback(StepSnapshots(trainer, tokenizer, tuple(checkpoints), out_dir))
    return finish_training(trainer, tokenizer, trainer.train(), out_dir)


def finish_training(trainer, tokenizer, result, out_dir: Path) -> dict:
    """The output contract of every training job: model/ (safetensors, config, tokenizer,
    training_args.json) and train_log.json (the trainer's log history) in out_dir."""
    save_model(trainer, tokenizer, out_dir / "model")
    if trainer.accelerator.is_main_process:
        (out_dir / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    return {"train_loss": result.training_loss, "steps": trainer.state.global_step}


def run_sft(
    base_dir: Path,
    sft_texts: Path | pd.DataFrame,
    cfg: SFTSettings,
    out_dir: Path,
    *,
    use_cpu: bool,
    mlflow_active: bool,
    training: TrainingSettings | None = None,
    peft: PeftSettings | None = None,
) -> dict:
    """Supervised fine-tuning: on `text` (plain language modelling, the study's SFT), or on
    `prompt` + `completion` columns (loss on the completion only, TRL's default for them).

    With `peft.sft: lora` SFT trains a LoRA adapter (saved in out_dir/adapter) and model/ holds
    it merged into the base: the reference and the start of every preference adapter."""
    lora = peft if peft is not None and peft.sft == "lora" else None
    training = training or default_training(use_cpu, lora)
    model, tokenizer = load_trainable(base_dir, training, lora)
    frame = sft_texts if isinstance(sft_texts, pd.DataFrame) else pd.read_parquet(sft_texts)
    columns = ["text"] if "text" in frame else ["prompt", "completion"]
    dataset = Dataset.from_pandas(frame[columns], preserve_index=False)
    arguments = _trainer_args(
        cfg, out_dir, seed=cfg.seed, use_cpu=use_cpu, mlflow_active=mlflow_active, training=training
    )
    peft_config = lora.lora_config() if lora else None
    # Padding-free: each batch's examples flattened into one row (position ids restart per
    # example, so attention stays within an example; the same losses as padded batches). TRL
    # does not truncate in this mode, so it is used when no example needs truncating.
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**{**arguments, "max_length": None}, packing=False, padding_free=True),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if max(len(ids) for ids in trainer.train_dataset["input_ids"]) > cfg.max_length:
        if lora:  # start again from the plain model: the first trainer wrapped it in the adapter
            model, tokenizer = load_trainable(base_dir, training, lora)
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**arguments, packing=False),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    if not lora:
        return train_and_save(trainer, tokenizer, out_dir)
    from dpolab.perf import attach_throughput

    attach_throughput(trainer)
    result = trainer.train()
    save_model(trainer, tokenizer, out_dir / "adapter")
    if trainer.accelerator.is_main_process:
        merge_adapter(base_dir, out_dir / "adapter", out_dir / "model", dtype=training.torch_dtype)
        (out_dir / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    return {"train_loss": result.training_loss, "steps": trainer.state.global_step}


def merge_adapter(base_dir: Path, adapter_dir: Path, model_dir: Path, *, dtype: str = "float32") -> None:
    """base + adapter, merged into plain weights (a transformers folder every stage reads). The
    base is loaded again unquantised, so a QLoRA adapter merges into 16-bit weights, not 4-bit ones."""
    from peft import PeftModel

    base, tokenizer = load_policy(base_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


def pairs_dataset(pairs: pd.DataFrame, reference: pd.DataFrame | None = None) -> Dataset:
    """prompt/chosen/rejected (+ reference log-probs joined on pair_id) as a datasets.Dataset."""
    frame = pairs[["pair_id", "prompt", "chosen", "rejected"]]
    if reference is not None:
        frame = frame.merge(reference[["pair_id", *REF_COLUMNS]], on="pair_id", how="left", validate="one_to_one")
        if frame[list(REF_COLUMNS)].isna().any().any():
            raise ValueError("reference log-probs are missing for some pairs: rerun the reference rule")
    return Dataset.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def dpo_args(
    cfg: DPOSettings,
    out_dir: Path,
    *,
    beta: float,
    seed: int,
    use_cpu: bool,
    mlflow_active: bool,
    training: TrainingSettings | None = None,
) -> DPOConfig:
    return DPOConfig(
        **_trainer_args(cfg, out_dir, seed=seed, use_cpu=use_cpu, mlflow_active=mlflow_active, training=training),
        beta=beta,
        precompute_ref_log_probs=True,
    )


def compute_reference_logps(
    sft_dir: Path,
    pairs: pd.DataFrame,
    cfg: DPOSettings,
    out_dir: Path,
    *,
    use_cpu: bool,
    training: TrainingSettings | None = None,
) -> pd.DataFrame:
    """Reference log-probs for every pair, by TRL's own precompute (same tokenisation and
    truncation as the DPO jobs), computed once and saved as parquet. The SFT model is loaded as
    the policies load it and run under the same autocast, so at step 0 a policy's log-probs equal
    these (the DPO loss starts at log 2)."""
    training = training or default_training(use_cpu)
    model, tokenizer = load_policy(sft_dir, dtype=training.torch_dtype)
    args = dpo_args(cfg, out_dir, beta=0.1, seed=0, use_cpu=use_cpu, mlflow_active=False, training=training)
    args.precompute_ref_batch_size = max(cfg.batch_size, 16)
    trainer = ReferenceDPOTrainer(
        model=model, args=args, train_dataset=pairs_dataset(pairs), processing_class=tokenizer
    )
    data = trainer.train_dataset
    reference = pd.DataFrame(
        {
            "pair_id": data["pair_id"],
            "ref_chosen_logps": data["ref_chosen_logps"],
            "ref_rejected_logps": data["ref_rejected_logps"],
            "chosen_tokens": [len(x) for x in data["chosen_ids"]],
            "rejected_tokens": [len(x) for x in data["rejected_ids"]],
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    reference.to_parquet(out_dir / "logps.parquet", index=False)
    meta = {
        "max_length": cfg.max_length,
        "truncation_mode": args.truncation_mode,
        "reference_model": str(sft_dir),
        "pairs": len(pairs),
        "kept": len(reference),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return reference


# Config attributes that change logits after the LM head (TRL's fused head reads the same ones).
LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def plain_head(model) -> bool:
    """Whether the LM head is a plain projection (logits = W h), so completion log-probs can
    be formed from the decoder's hidden states at the completion positions only."""
    config = model.config.get_text_config()
    return (
        all(getattr(config, name, None) is None for name in LOGIT_TRANSFORMS)
        and model.get_output_embeddings() is not None
        and getattr(model.get_output_embeddings(), "bias", None) is None
    )


def length_groups(lengths: list[int], overhead_tokens: int = 64) -> list[list[int]]:
    """Rows (indices into `lengths`) split into micro-batches of similar length: the partition
    of the rows sorted by length that minimises padded tokens plus `overhead_tokens` per
    micro-batch (one forward call's fixed cost in token-equivalents). Dynamic programming over
    the sorted rows: a batch is small, so this is exact and instant."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    best, cut = [0] + [None] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):  # the group order[start:end] is padded to its longest row
            cost = best[start] + (end - start) * lengths[order[end - 1]] + overhead_tokens
            if best[end] is None or cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def grouped_completion_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Summed completion log-probs of each right-padded row, computed without padding waste.

    Why by hand: TRL's padding-free DPO is disabled in the pinned TRL, and its fused LM head
    (tiled, recomputed in the backward) spent ~40% of a CPU step on a 49k vocabulary. Here rows
    of similar length share a forward (`length_groups`), each group cut to its longest row, and
    the head projects only the hidden states that predict completion tokens. The same batch,
    the same sums: only float rounding differs from the padded forward."""
    lengths = attention_mask.sum(dim=1).tolist()
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    parts, rows = [], []
    for group in length_groups(lengths):
        index = torch.tensor(group, device=input_ids.device)
        width = max(lengths[i] for i in group)
        ids, mask = input_ids[index, :width], attention_mask[index, :width]
        targets = completion_mask[index, 1:width].bool()
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
        token_logps = torch.log_softmax(head(hidden[targets]).float(), dim=-1)
        token_logps = token_logps.gather(-1, ids[:, 1:][targets][:, None]).squeeze(-1)
        row_of_token = targets.nonzero()[:, 0]
        parts.append(token_logps.new_zeros(len(group)).index_add(0, row_of_token, token_logps))
        rows.extend(group)
    inverse = torch.empty(len(rows), dtype=torch.long, device=input_ids.device)
    inverse[torch.tensor(rows, device=input_ids.device)] = torch.arange(len(rows), device=input_ids.device)
    return torch.cat(parts)[inverse]


class ReferenceDPOTrainer(DPOTrainer):
    """TRL's reference precompute (its tokenisation, truncation and batching), with each batch's
    log-probs formed by `grouped_completion_logps` (no padding waste) where the head allows."""

    def compute_ref_log_probs(self, model, inputs):
        # under the training precision's autocast, as the policies' forward passes run
        with self.accelerator.autocast():
            if self.ld_alpha is not None or not plain_head(model):
                return super().compute_ref_log_probs(model, inputs)
            with torch.no_grad():
                logps = grouped_completion_logps(
                    model, inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
                )
        return logps.chunk(2, dim=0)


class RegistryDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with the loss taken from `dpolab.losses` and reference log-probs read
    from the dataset (computed once per study), so no reference model is ever loaded here.

    Only `_compute_loss` and `_precompute_ref_logps` are replaced; tokenisation, collation,
    optimisation, logging and MLflow reporting are TRL's. TRL options that change how
    log-probs are formed (ld_alpha, f-divergences, WPO weighting) are refused, since the
    registry's formulas assume summed log-probs under reverse KL.
    """

    def __init__(self, *args, loss_name: str, loss_params: dict | None = None, grouped_logps: bool = True, **kwargs):
        """`grouped_logps=False` forms log-probs as TRL does (fused head on the padded batch):
        the baseline of benchmarks/dpo_step.py."""
        if loss_name not in losses.LOSSES:
            raise KeyError(f"unknown loss {loss_name!r}")
        self.loss_name, self.loss_params = loss_name, dict(loss_params or {})
        self.grouped_logps = grouped_logps
        config = kwargs.get("args")
        if config is not None:
            if config.ld_alpha is not None or config.use_weighting or config.f_divergence_type != "reverse_kl":
                raise ValueError("RegistryDPOTrainer supports summed log-probs under reverse KL only")
            if not config.precompute_ref_log_probs:
                raise ValueError(
                    "RegistryDPOTrainer reads reference log-probs from the dataset: set precompute_ref_log_probs"
                )
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        missing = [c for c in REF_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{name} dataset lacks {missing}: reference log-probs come from the reference rule")
        return dataset

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k not in ("completion_mask", *REF_COLUMNS)}
        shift_mask = completion_mask[..., 1:]
        # Several processes: the model is wrapped (DDP, FSDP, DeepSpeed), and only its own forward
        # lets the wrapper synchronise the gradients: TRL's way on the padded batch, not grouped.
        if self.grouped_logps and self.accelerator.num_processes == 1 and plain_head(model):
            logps = grouped_completion_logps(model, inputs["input_ids"], inputs["attention_mask"], completion_mask)
        else:  # logit scaling or soft-capping: TRL's fused head knows each model's rule
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
            # The fused head returns 0 at positions whose label is -100, so a row sum is the
            # summed completion log-prob.
            logps = outputs.log_probs[:, -shift_mask.size(1) :].sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # the collator stacks [chosen; rejected]
        chosen_lengths, rejected_lengths = shift_mask.sum(dim=1).chunk(2, dim=0)
        ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        per_pair = losses.compute(
            self.loss_name,
            chosen_logps,
            rejected_logps,
            ref_chosen,
            ref_rejected,
            beta=self.beta,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            **self.loss_params,
        )
        loss = per_pair.mean()
        self._log_pair_metrics(mode, chosen_logps, rejected_logps, ref_chosen, ref_rejected, inputs)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    def _log_pair_metrics(self, mode, chosen_logps, rejected_logps, ref_chosen, ref_rejected, inputs):
        """The metrics TRL logs for DPO, under TRL's names, so curves compare across tools."""
        gather = self.accelerator.gather_for_metrics
        chosen_rewards = self.beta * (chosen_logps - ref_chosen).detach()
        rejected_rewards = self.beta * (rejected_logps - ref_rejected).detach()
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
        metrics["num_tokens"] = [self._total_train_tokens]


def run_dpo(
    sft_dir: Path,
    pairs: pd.DataFrame,
    reference: pd.DataFrame,
    reference_meta: dict,
    cfg: DPOSettings,
    *,
    loss_name: str,
    loss_params: dict,
    beta: float,
    seed: int,
    out_dir: Path,
    use_cpu: bool,
    mlflow_active: bool,
    training: TrainingSettings | None = None,
    peft: PeftSettings | None = None,
    checkpoints: tuple[int, ...] = (),
) -> dict:
    """One grid point: train the SFT policy on the pairs with the registry loss (with `peft`, a
    LoRA adapter on the SFT model; the reference log-probs are still the SFT model's, read from
    the dataset, never the adapter switched off), saved at `checkpoints` on the way."""
    if reference_meta.get("max_length") != cfg.max_length:
        raise ValueError(
            f"dpo.max_length={cfg.max_length} differs from the reference log-probs' max_length="
            f"{reference_meta.get('max_length')}: rerun the reference rule"
        )
    training = training or default_training(use_cpu, peft)
    model, tokenizer = load_trainable(sft_dir, training, peft)
    args = dpo_args(cfg, out_dir, beta=beta, seed=seed, use_cpu=use_cpu, mlflow_active=mlflow_active, training=training)
    trainer = RegistryDPOTrainer(
        model=model,
        args=args,
        train_dataset=pairs_dataset(pairs, reference),
        processing_class=tokenizer,
        loss_name=loss_name,
        loss_params=loss_params,
        peft_config=peft.lora_config() if peft else None,
    )
    return train_and_save(trainer, tokenizer, out_dir, checkpoints)


def run_kto(
    start_dir: Path,
    examples: pd.DataFrame,
    cfg: DPOSettings,
    *,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
    seed: int,
    out_dir: Path,
    use_cpu: bool,
    mlflow_active: bool,
    training: TrainingSettings | None = None,
    peft: PeftSettings | None = None,
    checkpoints: tuple[int, ...] = (),
) -> dict:
    """KTO on unpaired (prompt, completion, label) examples with TRL's KTOTrainer. The
    reference is the starting model: TRL computes its log-probs once before training
    (precompute_ref_log_probs), including those of the mismatched completions of the KL term."""
    from trl import KTOConfig, KTOTrainer

    from dpolab.unpaired import training_order

    if cfg.batch_size < 2:
        raise ValueError(
            "KTO estimates its KL term from mismatched completions within a batch: dpo.batch_size must be >= 2"
        )
    training = training or default_training(use_cpu, peft)
    model, tokenizer = load_trainable(start_dir, training, peft)
    args = KTOConfig(
        **_trainer_args(cfg, out_dir, seed=seed, use_cpu=use_cpu, mlflow_active=mlflow_active, training=training),
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        precompute_ref_log_probs=True,  # no second model in memory during training (with LoRA: once, adapter off)
    )
    examples = training_order(examples[["prompt", "completion", "label"]], seed)
    dataset = Dataset.from_pandas(examples, preserve_index=False)
    trainer = KTOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft.lora_config() if peft else None,
    )
    return train_and_save(trainer, tokenizer, out_dir, checkpoints)


def run_orpo(
    start_dir: Path,
    pairs: pd.DataFrame,
    cfg: DPOSettings,
    *,
    beta: float,
    seed: int,
    out_dir: Path,
    use_cpu: bool,
    mlflow_active: bool,
    training: TrainingSettings | None = None,
    peft: PeftSettings | None = None,
    checkpoints: tuple[int, ...] = (),
) -> dict:
    """ORPO with TRL's ORPOTrainer (trl.experimental): NLL of the chosen response minus
    beta * log sigmoid(log odds(chosen) - log odds(rejected)), odds from length-averaged
    log-probs as in the paper; no reference model."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # experimental by TRL's label, pinned here
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    training = training or default_training(use_cpu, peft)
    model, tokenizer = load_trainable(start_dir, training, peft)
    args = ORPOConfig(
        **_trainer_args(cfg, out_dir, seed=seed, use_cpu=use_cpu, mlflow_active=mlflow_active, training=training),
        beta=beta,
        remove_unused_columns=False,  # its collator needs the tokenised columns
    )
    trainer = ORPOTrainer(
        model=model,
        args=args,
        train_dataset=pairs_dataset(pairs),
        processing_class=tokenizer,
        peft_config=peft.lora_config() if peft else None,
    )
    return train_and_save(trainer, tokenizer, out_dir, checkpoints)


def make_reference(
    study, *, sft_dir: Path, pairs_file: Path, logps_file: Path, meta_file: Path, log: bool = True
) -> pd.DataFrame:
    """The reference job: compute_reference_logps of the SFT model on the pairs into logps_file's
    folder (logps.parquet and meta.json, shared by every beta and loss); with `log`, the pair count
    and mean log-probs and meta_file to the active MLflow run. Returns the log-probs."""
    reference = compute_reference_logps(
        Path(sft_dir),
        pd.read_parquet(pairs_file),
        study.dpo,
        Path(logps_file).parent,
        use_cpu=study.device == "cpu",
        training=study.training,
    )
    if log:
        import mlflow

        mlflow.log_metrics(
            {
                "pairs": len(reference),
                "ref_chosen_logps_mean": float(reference["ref_chosen_logps"].mean()),
                "ref_rejected_logps_mean": float(reference["ref_rejected_logps"].mean()),
            }
        )
        mlflow.log_artifact(str(meta_file))
    return reference
