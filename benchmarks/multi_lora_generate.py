"""Generating K LoRA policies: an engine per merged policy (the previous way) against one engine
with enable_lora (dpolab's generate_adapters), side by side in one process.

K LoRA adapters are trained on the model (a few DPO steps each, each its own beta and seed, on
pairs from IMDb openings: a review's own continuation chosen over another review's), then every
policy answers the same test prompts at every temperature, each sample with its log-prob under
the policy and under the model the adapters were trained on (the reference):
  baseline: per policy, the adapter merged into full weights, a vLLM engine started on them, the
            samples drawn, the reference's weights swapped into that engine (load_weights) and the
            samples scored: one merge, one engine start and one weight swap per policy;
  dpolab:   one engine on the reference with max_lora_rank; each policy's requests carry its
            adapter, and the reference scores with the adapter off (policy_samples(adapter=...));
and, for scale, a third way that needs neither:
  swap:     one plain engine on the reference; per policy the merged weights are swapped in
            (load_weights), sampled, and the reference swapped back to score.
A warm-up engine runs first (untimed), so no side pays the process's first-engine costs (in the
workflow every generate job is a new process: each engine start there also pays vLLM's import).
The sides run policy by policy in turn (the order rotating), so background load on the machine
falls on all of them alike.
Prints each side's seconds by phase (sample: drawing the samples; reference: swapping the
reference in and scoring), the ratios, engine starts, and per policy how many completions equal
the baseline's (greedy, and sampled with the same per-request seeds) and the largest per-sample
log-prob differences on identical completions. Everything is written to a temporary folder
unless --out is given (then the models, samples and results.json stay there, and a rerun with
the same setup arguments reuses the model and the adapters).

    python benchmarks/multi_lora_generate.py                         # SmolLM2-135M (default study), K=4
    python benchmarks/multi_lora_generate.py --model smoke --quick   # the smoke study's scratch model, K=2

--lora-modules adapters (the default) starts the dpolab engine with LoRA on the adapters' own
modules only (vLLM's lora_target_modules): vLLM 0.32 otherwise wraps the LM head too, and its
LoRA logits path fails on prompt log-probs (the reference scoring) for a batch of several
sequences. --lora-modules all uses dpolab.generate's engine unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dpolab.generate import VLLMSampler, policy_samples  # noqa: E402

BETAS = (0.05, 0.1, 0.5, 1.0)


def prepare_model(name: str, out: Path) -> Path:
    from dpolab.config import ROOT, read_study
    from dpolab.models import prepare_base_model

    prepare_base_model(read_study(ROOT / "configs" / f"{name}.yaml", check_environment=False).section("model"), out)
    return out


def prompts_and_pairs(n_prompts: int, n_pairs: int, seed: int) -> tuple[list[tuple[int, str]], pd.DataFrame]:
    """Test prompts (IMDb review openings of 2-8 words, as the data stage makes them) and
    training pairs from other reviews: a review's own continuation chosen over the next one's."""
    from dpolab.data import load_imdb_reviews, make_prompts

    rows = make_prompts(load_imdb_reviews(), n_prompts + 2 * n_pairs, np.random.default_rng(seed), 2, 8, 24)
    test, train = rows.iloc[:n_prompts], rows.iloc[n_prompts:]
    train = train[train["chosen"].str.len() > 0].reset_index(drop=True)
    pairs = pd.DataFrame({"prompt": train["prompt"], "chosen": train["chosen"],
                          "rejected": np.roll(train["chosen"].to_numpy(), 1)})
    pairs = pairs[pairs["chosen"] != pairs["rejected"]].head(n_pairs).reset_index(drop=True)
    pairs.insert(0, "pair_id", range(len(pairs)))
    return list(zip(range(len(test)), test["prompt"])), pairs


def train_adapters(base: Path, pairs: pd.DataFrame, k: int, *, steps: int, learning_rate: float, rank: int,
                   out: Path) -> list[tuple[str, Path]]:
    """K LoRA policies on `base`: DPO, each with its own beta and seed."""
    from dpolab.settings import PeftSettings
    from dpolab.train import DPOSettings, compute_reference_logps, run_dpo

    cfg = DPOSettings(max_steps=steps, batch_size=8, gradient_accumulation_steps=1, learning_rate=learning_rate,
                      warmup_steps=0, max_length=64, logging_steps=1)
    reference = compute_reference_logps(base, pairs, cfg, out / "reference", use_cpu=True)
    meta = json.loads((out / "reference" / "meta.json").read_text())
    adapters = []
    for index in range(k):
        beta, seed = BETAS[index % len(BETAS)], index // len(BETAS)
        name = f"beta~{beta:g}/seed~{seed}"
        run_dpo(base, pairs, reference, meta, cfg, loss_name="dpo", loss_params={}, beta=beta, seed=seed,
                out_dir=out / name, use_cpu=True, mlflow_active=False,
                peft=PeftSettings(r=rank, lora_alpha=2 * rank, lora_dropout=0.0))
        adapters.append((name, out / name / "model"))
    return adapters


def adapter_modules(adapters: list[Path]) -> list[str]:
    """The module names (last path component) the adapters train, e.g. q_proj, down_proj."""
    names = set()
    for adapter in adapters:
        targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
        names.update([targets] if isinstance(targets, str) else (t.split(".")[-1] for t in targets))
    return sorted(names)


@contextlib.contextmanager
def lora_on(modules: list[str] | None):
    """Engines started inside get LoRA on `modules` only (vLLM's lora_target_modules), unless
    the engine is given its own list; None: vLLM's default (every supported module, the LM head too)."""
    import vllm

    original = vllm.LLM
    if modules is None:
        yield
        return

    class LLM(original):
        def __init__(self, *args, **kwargs):
            if kwargs.get("enable_lora"):
                kwargs.setdefault("lora_target_modules", list(modules))
            super().__init__(*args, **kwargs)

    vllm.LLM = LLM
    try:
        yield
    finally:
        vllm.LLM = original


class Clock:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def timed_policy_samples(clock: Clock, sampler, requests, temperatures, **how) -> dict:
    """policy_samples, its seconds split into "reference" (the sampler's load_weights and score
    calls) and "sample" (the rest)."""
    names = ("load_weights", "score")
    for name in names:
        def timed(*args, _method=getattr(sampler, name), **kwargs):
            with clock("reference"):
                return _method(*args, **kwargs)

        setattr(sampler, name, timed)
    before, start = clock.seconds.get("reference", 0.0), time.perf_counter()
    try:
        return policy_samples(sampler, requests, temperatures, **how)
    finally:
        for name in names:
            delattr(sampler, name)
        clock.add("sample", time.perf_counter() - start - (clock.seconds.get("reference", 0.0) - before))


def warm_up(base: Path, requests, sampling: dict, engine_args: dict) -> list[list[int]]:
    """One engine, a few samples and a score: the process's one-time costs (vLLM's first
    compilations of its log-prob code, imports), paid before any side is timed. Returns the
    reference's greedy completions (to count how many each policy changes)."""
    sampler = VLLMSampler(base, **engine_args)
    policy_samples(sampler, requests[:2], [1.0], top_p=1.0, max_new_tokens=4, seed=0, reference_dir=base)
    greedy = sampler.sample_temperatures(requests, [0.0], n=1, **sampling)[0.0]
    del sampler
    gc.collect()
    return [row[0].completion_token_ids for row in greedy]


class Side:
    """One way of generating the policies: `start` once, `run` per policy (timed by phase)."""

    label = ""
    engine_starts = 0

    def __init__(self, base: Path, requests, temperatures, sampling: dict, engine_args: dict, work: Path):
        self.base, self.requests, self.temperatures, self.sampling = base, requests, temperatures, sampling
        self.engine_args, self.work = engine_args, work
        self.clock, self.records, self.sampler = Clock(), {}, None

    def start(self, adapters) -> None:
        pass

    def stop(self) -> None:
        self.sampler = None
        gc.collect()

    def merged(self, name: str, adapter: Path) -> Path:
        from dpolab.train import merge_adapter

        out = self.work / "merged" / type(self).__name__ / name
        with self.clock("merge"):
            merge_adapter(self.base, adapter, out)
        return out

    def samples(self, **how) -> dict:
        return timed_policy_samples(self.clock, self.sampler, self.requests, self.temperatures, **how, **self.sampling)


class Baseline(Side):
    """An engine per merged policy, the reference swapped in to score."""

    label = "baseline: engine per merged policy"

    def run(self, name: str, adapter: Path) -> None:
        # The previous policy's engine goes only now, right before the next one starts: engines in
        # one process share vLLM's parallel-state globals, which a closing engine tears down and a
        # starting one sets up, so the other sides' engines keep working in between.
        with self.clock("engine start"):
            self.stop()
        merged = self.merged(name, adapter)
        with self.clock("engine start"):
            self.sampler = VLLMSampler(merged, **self.engine_args)
        self.engine_starts += 1
        self.records[name] = self.samples(reference_dir=self.base)
        shutil.rmtree(merged)


class OneEngine(Side):
    """One engine on the reference serving every adapter (as generate_adapters)."""

    label = "dpolab: one engine, enable_lora"

    def __init__(self, *args, modules: list[str] | None):
        super().__init__(*args)
        self.modules = modules

    def start(self, adapters) -> None:
        from dpolab.models import adapter_rank

        rank = max(adapter_rank(adapter) for _, adapter in adapters)
        with self.clock("engine start"), lora_on(self.modules):
            self.sampler = VLLMSampler(self.base, **self.engine_args, max_lora_rank=rank,
                                       max_loras=min(len(adapters), 8))
        self.engine_starts += 1

    def run(self, name: str, adapter: Path) -> None:
        self.records[name] = self.samples(adapter=adapter)


class Swap(Side):
    """One plain engine on the reference; each merged policy swapped in, the reference back to score."""

    label = "swap: one engine, load_weights"

    def start(self, adapters) -> None:
        with self.clock("engine start"):
            self.sampler = VLLMSampler(self.base, **self.engine_args)
        self.engine_starts += 1

    def run(self, name: str, adapter: Path) -> None:
        merged = self.merged(name, adapter)
        with self.clock("policy in"):
            self.sampler.load_weights(merged)
        self.records[name] = self.samples(reference_dir=self.base)
        shutil.rmtree(merged)


def compare(a: list[dict], b: list[dict]) -> dict:
    same = [x["completion_token_ids"] == y["completion_token_ids"] for x, y in zip(a, b)]
    pairs = [(x, y) for x, y, s in zip(a, b, same) if s]

    def gap(key):
        return max((abs(x[key] - y[key]) for x, y in pairs), default=float("nan"))

    kl = [np.mean([r["policy_logps"] - r["reference_logps"] for r in rows]) for rows in (a, b)]
    return {"identical": int(sum(same)), "total": len(same), "policy_logp_gap": gap("policy_logps"),
            "reference_logp_gap": gap("reference_logps"), "kl_baseline": kl[0], "kl_this": kl[1]}


def setup(args, work: Path) -> tuple[Path, list[tuple[str, Path]], float, bool]:
    """The model and the trained adapters in `work`; reused when `work` holds those of the same
    setup arguments (a rerun with --out)."""
    key = {name: getattr(args, name)
           for name in ("model", "policies", "prompts", "pairs", "steps", "learning_rate", "rank", "seed")}
    marker = work / "setup.json"
    names = [f"beta~{BETAS[i % len(BETAS)]:g}/seed~{i // len(BETAS)}" for i in range(args.policies)]
    adapters = [(name, work / "adapters" / name / "model") for name in names]
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return work / "base", adapters, 0.0, True
    started = time.perf_counter()
    base = prepare_model(args.model, work / "base")
    _, pairs = prompts_and_pairs(args.prompts, args.pairs, args.seed)
    trained = train_adapters(base, pairs, args.policies, steps=args.steps, learning_rate=args.learning_rate,
                             rank=args.rank, out=work / "adapters")
    assert [name for name, _ in trained] == names
    marker.write_text(json.dumps(key))
    return base, trained, time.perf_counter() - started, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", "smoke"], default="default",
                        help="the study config whose model is used: default (SmolLM2-135M) or smoke (scratch Llama)")
    parser.add_argument("--policies", "-k", type=int, default=4, help="LoRA policies (K)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--pairs", type=int, default=32, help="training pairs")
    parser.add_argument("--steps", type=int, default=4, help="DPO steps per adapter (batch 8)")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-modules", choices=["adapters", "all"], default="adapters",
                        help="adapters: LoRA on the adapters' modules only; all: vLLM's default (the LM head too)")
    parser.add_argument("--no-swap", action="store_true",
                        help="skip the third way (merged weights swapped into one engine)")
    parser.add_argument("--quick", action="store_true", help="K=2, 16 prompts, 8 new tokens, 2 steps")
    parser.add_argument("--out", type=Path, help="keep models, samples and results.json here")
    args = parser.parse_args()
    if args.quick:
        args.policies, args.prompts, args.max_new_tokens, args.steps = 2, 16, 8, 2
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with contextlib.ExitStack() as stack:
        work = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="multi-lora-")))
        work.mkdir(parents=True, exist_ok=True)
        base, adapters, setup_s, reused = setup(args, work)
        requests, _ = prompts_and_pairs(args.prompts, args.pairs, args.seed)
        engine_args = dict(max_model_len=args.max_new_tokens + 64, seed=args.seed, cache_dir=work / "vllm-cache")
        sampling = dict(top_p=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed)
        modules = adapter_modules([a for _, a in adapters]) if args.lora_modules == "adapters" else None
        started = time.perf_counter()
        reference_greedy = warm_up(base, requests, sampling, engine_args)
        warm = time.perf_counter() - started
        common = (base, requests, args.temperatures, sampling, engine_args, work)
        sides = {"baseline": Baseline(*common), "dpolab": OneEngine(*common, modules=modules)}
        if not args.no_swap:
            sides["swap"] = Swap(*common)
        # policy by policy, every side in turn (the order rotating), so background load on the
        # machine falls on all sides alike
        for side in sides.values():
            side.start(adapters)
        order = list(sides.values())
        for index, (name, adapter) in enumerate(adapters):
            for side in order[index % len(order):] + order[:index % len(order)]:
                side.run(name, adapter)
        for side in sides.values():  # the baseline's last engine closes first: see Baseline.run
            side.stop()

    t0, t1 = args.temperatures[0], args.temperatures[-1]
    base_records = sides["baseline"].records
    rows = {key: {name: {t: compare(base_records[name][t], side.records[name][t]) for t in args.temperatures}
                  for name, _ in adapters}
            for key, side in sides.items() if key != "baseline"}
    model = "SmolLM2-135M (default study)" if args.model == "default" else "scratch Llama (smoke study)"
    print(f"\n{model}: K={len(adapters)} LoRA policies (r={args.rank}, {args.steps} DPO steps each), "
          f"{len(requests)} prompts x temperatures {args.temperatures}, {args.max_new_tokens} new tokens; setup "
          f"(model, training) {'reused' if reused else f'{setup_s:.0f} s'}, warm-up engine {warm:.0f} s (untimed)")
    phases = ["merge", "engine start", "policy in", "sample", "reference"]
    baseline_total = sides["baseline"].clock.total
    print(f"\n{'':36s}{'wall s':>8s}{'ratio':>7s}{'engines':>9s}" + "".join(f"{p:>14s}" for p in phases))
    for side in sides.values():
        clock = side.clock
        print(f"{side.label:36s}{clock.total:8.1f}{clock.total / baseline_total:7.2f}{side.engine_starts:9d}"
              + "".join(f"{clock.seconds.get(p, 0.0):14.1f}" for p in phases))
    print("(ratio: wall time over the baseline's; policy in: merged weights loaded into the running engine; "
          "reference: the reference's weights swapped in and scoring; sides ran policy by policy in turn)")
    if 0.0 in args.temperatures:
        changed = {name: sum(r["completion_token_ids"] != ref
                             for r, ref in zip(base_records[name][0.0], reference_greedy)) for name, _ in adapters}
        print("\ngreedy completions that differ from the reference's: "
              + ", ".join(f"{name} {n}/{len(requests)}" for name, n in changed.items()))
    print(f"\n{'against the baseline':36s}{f'identical T={t0:g}':>16s}{f'identical T={t1:g}':>16s}"
          f"{'max |d policy logp|':>22s}{'max |d reference logp|':>25s}{f'KL T={t1:g}: baseline':>20s}{'this':>9s}")
    for side, by_name in rows.items():
        for name, by_t in by_name.items():
            policy_gap = max(r["policy_logp_gap"] for r in by_t.values())
            reference_gap = max(r["reference_logp_gap"] for r in by_t.values())
            kl = by_t[t1]
            print(f"{side + ' ' + name:36s}{by_t[t0]['identical']:>9d}/{by_t[t0]['total']:<6d}"
                  f"{by_t[t1]['identical']:>9d}/{by_t[t1]['total']:<6d}{policy_gap:22.2e}{reference_gap:25.2e}"
                  f"{kl['kl_baseline']:20.4f}{kl['kl_this']:9.4f}")
    print("(log-prob gaps in nats over identical completions; KL: mean policy minus reference log-prob)")
    if args.out:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        results = {"model": args.model, "args": settings,
                   "seconds": {key: side.clock.seconds for key, side in sides.items()},
                   "setup_seconds": setup_s, "warm_up_seconds": warm,
                   "ratio": {key: side.clock.total / baseline_total for key, side in sides.items()},
                   "engine_starts": {key: side.engine_starts for key, side in sides.items()},
                   "against_baseline": {side: {name: {str(t): r for t, r in by_t.items()}
                                               for name, by_t in by_name.items()}
                                        for side, by_name in rows.items()}}
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        for key, side in sides.items():
            for name, by_t in side.records.items():
                folder = args.out / "samples" / key / name
                folder.mkdir(parents=True, exist_ok=True)
                pd.DataFrame([r for t in args.temperatures for r in by_t[t]]).to_json(
                    folder / "samples.jsonl", orient="records", lines=True)


if __name__ == "__main__":
    main()
