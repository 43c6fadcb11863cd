"""The workflow vs a naive sweep of the same sub-grid, side by side on one machine.

What it measures: the wall time of one beta sweep (by default configs/default.yaml restricted to
variant dpo x its betas x seed 0, everything else unchanged: data, model, steps, prompts,
temperatures, judges) done two ways, and whether both give the same results:

  naive:    what a user without dpolab writes (alignment-handbook / TRL example scripts style):
            one fresh Python process per grid point (SFT, then each beta), run one after another,
            each using every core; it loads the SFT model and a second copy as the live reference
            model, trains with plain trl.DPOTrainer (loss "sigmoid", precompute_ref_log_probs
            False, the workflow's TrainingArguments), samples the test prompts with transformers'
            `model.generate` (batched, left padding) at each temperature, and scores the samples:
            gold judge, VADER, and KL to the reference by a full forward of both models;
  workflow: `snakemake --cores N` to the study's final targets (shared reference log-probs,
            vLLM generation, one evaluate job per policy, comparison, summary, plots, MLflow).

Both start from the same inputs, made once beforehand by the workflow and not timed: the SFT
model, the pairs, the test prompts and the gold judge. Both sides run in this one script on the
same machine, one after the other, so neither gets a different machine, load or cache. The naive
side is built this way because it is the usual way to sweep without a workflow tool: a shell loop
over a training/eval script, each process paying interpreter start, imports and model loads, the
reference model run at every step, and transformers' `generate` (no serving engine).

Printed (and written to --out as JSON): both wall times, workflow / naive (the goal: <= 0.50),
where each side's time goes (naive: per stage; workflow: per rule, from Snakemake's benchmark
files of the jobs of the timed launch), and consistency checks, PASS/FAIL with the numbers:
training losses per beta (first logged step within 1e-4; largest difference over all steps), and
reward and KL per (policy, temperature) within 3 combined standard errors.

    python benchmarks/naive_sweep.py                                   # default study, 2 cores
    python benchmarks/naive_sweep.py --config configs/smoke.yaml --cores 1 --workdir /tmp/naive-smoke
    python benchmarks/naive_sweep.py --skip-naive                      # rerun the workflow side only

Everything goes to --workdir (the sub-grid config, results/<study>-subgrid/, the MLflow store, the
naive side's outputs and the Snakemake logs); the repository's results/ is not touched.
Movie-review (IMDb miniature) studies on the CPU only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
WORKFLOW_PROFILE = REPO / "profiles" / "default"
GENERATE_BATCH = 32  # prompts per `generate` call on the naive side
SCORE_BATCH = 32  # sequences per forward of the naive side's log-prob scorer
LOSS_TOLERANCE = 1e-4
NOISE_SIGMAS = 3.0
# Rules that make the shared inputs; none of them should run again in the timed launch.
SHARED_RULES = {"mlflow_study", "data", "judge", "base_model", "sft", "pairs"}


# ---- naming -------------------------------------------------------------------------------------
def fmt(value: float) -> str:
    """A beta or temperature as the workflow writes it in paths (`:g`: 1.0 -> 1, 0.05 -> 0.05)."""
    return f"{float(value):g}"


def policy_id(variant: str, beta: float | None, seed: int) -> str:
    """`sft`, or the workflow's policy path of a grid point."""
    return "sft" if beta is None else f"variant~{variant}/beta~{fmt(beta)}/seed~{seed}"


def subgrid_path(workdir: Path) -> Path:
    return workdir / "subgrid.yaml"


def naive_dir(workdir: Path) -> Path:
    return workdir / "naive"


def load_subgrid(workdir: Path):
    """The sub-grid's checked Study (schema defaults filled in)."""
    from dpolab.config import load_study

    return load_study(yaml.safe_load(subgrid_path(workdir).read_text()), check_environment=False)


def results_dir(workdir: Path, study) -> Path:
    return workdir / study.results_dir


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


# ---- the sub-grid config ------------------------------------------------------------------------
def write_subgrid_config(
    config_path: Path, variant: str, betas: list[float] | None, seed: int, workdir: Path
) -> tuple[Path, list[float]]:
    """The study config with only `grid` changed (one variant, its betas, one seed), renamed
    `<study>-subgrid`, tracking to a sqlite store in the workdir. Returns the file and the betas."""
    config = yaml.safe_load(config_path.read_text())
    if variant not in config["variants"]:
        sys.exit(f"--variant {variant}: not a variant of {config_path}")
    entry = dict(config["variants"][variant])
    if entry.get("loss") != "dpo":
        sys.exit(f"--variant {variant}: the naive side trains TRL's sigmoid DPO loss; pick a variant with loss: dpo")
    if config.get("data", {}).get("source", "movie_reviews") != "movie_reviews":
        sys.exit("the benchmark needs a movie-review study (gold judge, VADER); data.source is preferences")
    betas = [float(b) for b in (betas or entry.get("betas") or config["grid"]["betas"])]
    entry.pop("betas", None)  # the grid's betas are the sweep's
    config["variants"][variant] = entry
    config["study"] = f"{config['study']}-subgrid"
    config["grid"] = {"variants": [variant], "betas": betas, "seeds": [seed]}
    config["mlflow"] = {
        **(config.get("mlflow") or {}),
        "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "artifact_location": None,
        "experiment": None,
    }
    path = subgrid_path(workdir)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, betas


# ---- Snakemake --------------------------------------------------------------------------------
def snakemake(workdir: Path, cores: int, targets: list[str], log_name: str, extra: tuple[str, ...] = ()) -> float:
    """One Snakemake launch in the workdir; its output goes to workdir/logs/<log_name>.log.
    Returns its wall time; exits with the log's tail if it fails."""
    log = workdir / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(WORKFLOW_PROFILE),
        "--configfile",
        str(subgrid_path(workdir)),
        "--cores",
        str(cores),
        *extra,
        *targets,
    ]
    start = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-40:]
        sys.exit(f"snakemake ({log_name}) failed, exit {result.returncode}; log {log}:\n" + "\n".join(tail))
    return wall


def make_shared_inputs(workdir: Path, study, cores: int) -> float:
    """The untimed part: SFT model, pairs, test prompts and gold judge, by the workflow."""
    results = study.results_dir  # relative: Snakemake runs in the workdir
    targets = [
        f"{results}/sft/model",
        f"{results}/pairs/pairs.parquet",
        f"{results}/data/prompts_test.parquet",
        f"{results}/judge/gold",
    ]
    return snakemake(workdir, cores, targets, "shared_inputs")


def run_workflow(workdir: Path, study, cores: int) -> dict[str, Any]:
    """The timed part: the rest of the sub-grid to the study's final targets. `--forcerun
    reference generate` makes a rerun redo every job after the shared inputs (a first run does
    them anyway); `--rerun-triggers mtime` keeps the shared inputs as they are even if code
    changed since they were made."""
    started = time.time()
    extra = ("--forcerun", "reference", "generate", "--rerun-triggers", "mtime")
    wall = snakemake(workdir, cores, [], "workflow", extra)
    per_rule, jobs = rule_split(results_dir(workdir, study), since=started)
    reran_shared = sorted(SHARED_RULES & set(per_rule))
    timing = {"wall_s": wall, "per_rule": per_rule, "jobs": jobs, "shared_jobs_rerun": reran_shared}
    (workdir / "workflow_timing.json").write_text(json.dumps(timing, indent=2))
    return timing


def rule_split(study_dir: Path, *, since: float) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Seconds per rule from the benchmark files written by jobs of the timed launch (mtime
    after `since`; a file per job, so an older one is a job of an earlier launch)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from study_time import per_rule

    benchmarks = study_dir / "benchmarks"
    new = [tsv for tsv in sorted(benchmarks.rglob("*.tsv")) if tsv.stat().st_mtime >= since]
    if not new:
        return {}, []
    with tempfile.TemporaryDirectory() as tmp:  # per_rule reads <dir>/benchmarks/**.tsv: only the new ones there
        for tsv in new:
            copy = Path(tmp) / "benchmarks" / tsv.relative_to(benchmarks)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tsv, copy)
        table = per_rule(Path(tmp))
    per = {
        rule: {"jobs": int(row["jobs"]), "seconds": float(row["seconds"]), "share": float(row["share"])}
        for rule, row in table.iterrows()
    }
    return per, [str(tsv.relative_to(benchmarks)) for tsv in new]


# ---- the naive side: the parent -----------------------------------------------------------------
def run_naive(workdir: Path, variant: str, betas: list[float], seed: int, cores: int) -> dict[str, Any]:
    """One fresh process per grid point, one after the other, as a shell loop would."""
    out = naive_dir(workdir)
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    points, start = {}, time.perf_counter()
    for beta in [None, *betas]:
        point = "sft" if beta is None else fmt(beta)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--point",
            point,
            "--workdir",
            str(workdir),
            "--variant",
            variant,
            "--seed",
            str(seed),
            "--cores",
            str(cores),
        ]
        log = workdir / "logs" / f"naive_{point}.log"
        began = time.perf_counter()
        with open(log, "w") as handle:  # TRL's per-step log lines go there, not into the report
            result = subprocess.run(command, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-40:])
            sys.exit(
                f"naive point {policy_id(variant, beta, seed)} failed, exit {result.returncode}; log {log}:\n{tail}"
            )
        points[policy_id(variant, beta, seed)] = time.perf_counter() - began
    wall = time.perf_counter() - start
    timing = {"wall_s": wall, "points_s": points, "stages": naive_stages(workdir, points)}
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    return timing


def naive_stages(workdir: Path, point_walls: dict[str, float]) -> dict[str, float]:
    """Seconds per stage summed over the points; `startup` is the rest of each process's wall
    time (interpreter start, writing results, exit)."""
    stages = {"startup": 0.0, "imports": 0.0, "load": 0.0, "train": 0.0, "generate": 0.0, "score": 0.0}
    for policy, wall in point_walls.items():
        files = read_naive_point(workdir, policy)
        point = next(iter(files.values()))["timings"]["point"]
        spent = point["imports"] + point["load"] + point.get("train", 0.0)
        stages["imports"] += point["imports"]
        stages["load"] += point["load"]
        stages["train"] += point.get("train", 0.0)
        for record in files.values():
            stages["generate"] += record["timings"]["temperature"]["generate"]
            stages["score"] += record["timings"]["temperature"]["score"]
            spent += record["timings"]["temperature"]["generate"] + record["timings"]["temperature"]["score"]
        stages["startup"] += wall - spent
    return stages


def read_naive_point(workdir: Path, policy: str) -> dict[str, dict]:
    """temperature label -> the point's JSON at that temperature."""
    folder = naive_dir(workdir) / policy
    files = sorted(folder.glob("temp~*.json"))
    return {path.stem.removeprefix("temp~"): json.loads(path.read_text()) for path in files}


# ---- the naive side: one grid point (a fresh process) ----------------------------------------
def run_point(point: str, workdir: Path, variant: str, seed: int, cores: int) -> None:
    """Load, train (a beta point), then generate and score at every temperature; one JSON per
    temperature under workdir/naive/<policy>/."""
    imports: dict[str, float] = {}
    with timed(imports, "imports"):
        import pandas as pd
        import torch

        from dpolab.judges import GoldJudge, VaderJudge
        from dpolab.models import load_policy
    torch.set_num_threads(cores)
    study = load_subgrid(workdir)
    results = results_dir(workdir, study)
    beta = None if point == "sft" else float(point)
    policy_name = policy_id(variant, beta, seed)
    out_dir = naive_dir(workdir) / policy_name
    timings: dict[str, float] = {}

    with timed(timings, "load"):
        policy, tokenizer = load_policy(results / "sft" / "model")
        # the SFT policy is its own reference: one model, KL 0; a beta point trains against a live copy
        reference = policy if beta is None else load_policy(results / "sft" / "model")[0]
        prompts = pd.read_parquet(results / "data" / "prompts_test.parquet")
        pairs = pd.read_parquet(results / "pairs" / "pairs.parquet")
    losses: list[dict[str, float]] = []
    if beta is not None:
        with timed(timings, "train"):
            losses = train_dpo(policy, reference, tokenizer, study, pairs, beta=beta, seed=seed, out_dir=out_dir)

    gen = study.generation
    texts, prompt_ids = prompts["prompt"].tolist(), prompts["prompt_id"].tolist()
    judges: dict[str, Any] = {}
    for temperature in study.temperatures:
        step: dict[str, float] = {}
        with timed(step, "generate"):
            prompt_tokens, completion_tokens, completions = generate(
                policy,
                tokenizer,
                texts,
                prompt_ids,
                temperature=float(temperature),
                top_p=gen.top_p,
                max_new_tokens=gen.max_new_tokens,
                seed=gen.seed,
            )
        with timed(step, "score"):
            if not judges:  # loaded once per process, counted as scoring
                judges = {"gold": GoldJudge.load(results / "judge" / "gold"), "vader": VaderJudge()}
            metrics = score(
                policy,
                reference,
                judges,
                texts,
                completions,
                prompt_tokens,
                completion_tokens,
                pad_id=tokenizer.pad_token_id,
            )
        record = {
            "policy": policy_name,
            "beta": beta,
            "seed": seed,
            "temperature": float(temperature),
            **metrics,
            "losses": losses,
            "timings": {"point": {**imports, **timings}, "temperature": step},
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"temp~{fmt(temperature)}.json").write_text(json.dumps(record, indent=2))


def train_dpo(
    policy, reference, tokenizer, study, pairs, *, beta: float, seed: int, out_dir: Path
) -> list[dict[str, float]]:
    """Plain TRL DPO with a live reference model and the workflow's TrainingArguments. Returns
    the logged training losses (step, loss)."""
    from trl import DPOTrainer

    from dpolab.train import dpo_args, pairs_dataset

    args = dpo_args(study.dpo, out_dir, beta=beta, seed=seed, use_cpu=True, mlflow_active=False)
    args.precompute_ref_log_probs = False  # TRL's default: the reference model runs at every step
    args.loss_type = ["sigmoid"]
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=pairs_dataset(pairs), processing_class=tokenizer
    )
    trainer.train()
    return [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]


def generate(
    model,
    tokenizer,
    texts: list[str],
    prompt_ids: list[int],
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """Batched `model.generate` (left padding); greedy at temperature 0, else pure sampling
    (top_k off, the study's top_p), seeded per batch. Completions end at the first EOS (kept,
    as the workflow counts it)."""
    import torch

    from dpolab.generate import request_seed

    model.eval()
    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    greedy = dict(do_sample=False)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else greedy
    prompt_tokens, completion_tokens, completions = [], [], []
    for start in range(0, len(texts), GENERATE_BATCH):
        batch = tokenizer(texts[start : start + GENERATE_BATCH], return_tensors="pt", padding=True)
        torch.manual_seed(request_seed(seed, prompt_ids[start]))
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
        width = batch["input_ids"].shape[1]
        for ids, mask, new in zip(batch["input_ids"], batch["attention_mask"], out[:, width:]):
            tokens = new.tolist()
            if eos in tokens:  # a finished row is padded after its EOS
                tokens = tokens[: tokens.index(eos) + 1]
            prompt_tokens.append(ids[mask.bool()].tolist())
            completion_tokens.append(tokens)
            completions.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return prompt_tokens, completion_tokens, completions


def completion_logps(
    model, prompt_tokens: list[list[int]], completion_tokens: list[list[int]], pad_id: int
) -> list[float]:
    """Summed log-prob of each completion given its prompt: a right-padded forward per batch."""
    import torch

    model.eval()
    out = []
    for start in range(0, len(prompt_tokens), SCORE_BATCH):
        prompts = prompt_tokens[start : start + SCORE_BATCH]
        completions = completion_tokens[start : start + SCORE_BATCH]
        rows = [p + c for p, c in zip(prompts, completions)]
        ids = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            # token t+1 is predicted at position t: the completion's tokens at len(p)-1 .. len(p)+len(c)-2
            out.append(float(token_logps[i, len(p) - 1 : len(p) - 1 + len(c)].sum()))
    return out


def score(
    policy,
    reference,
    judges: dict[str, Any],
    texts: list[str],
    completions: list[str],
    prompt_tokens: list[list[int]],
    completion_tokens: list[list[int]],
    *,
    pad_id: int,
) -> dict[str, float]:
    """Gold reward (mean, standard error), VADER, KL (mean, standard error) and length."""
    import numpy as np

    gold = np.asarray(judges["gold"].score(texts, completions), dtype=np.float64)
    vader = np.asarray(judges["vader"].score(texts, completions), dtype=np.float64)
    policy_logps = np.asarray(completion_logps(policy, prompt_tokens, completion_tokens, pad_id))
    reference_logps = (
        policy_logps
        if reference is policy
        else np.asarray(completion_logps(reference, prompt_tokens, completion_tokens, pad_id))
    )
    kl = policy_logps - reference_logps
    n = len(gold)
    return {
        "n": n,
        "reward_mean": float(gold.mean()),
        "reward_se": float(gold.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "vader_mean": float(vader.mean()),
        "kl_mean": float(kl.mean()),
        "kl_se": float(kl.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "length_mean": float(np.mean([len(c) for c in completion_tokens])),
    }


# ---- consistency checks -------------------------------------------------------------------------
def loss_checks(workdir: Path, study, variant: str, betas: list[float], seed: int) -> list[dict[str, Any]]:
    """Per beta: the first logged loss of both sides within LOSS_TOLERANCE, and the largest
    difference over the logged steps both have."""
    checks = []
    for beta in betas:
        policy = policy_id(variant, beta, seed)
        naive = next(iter(read_naive_point(workdir, policy).values()))["losses"]
        log_file = results_dir(workdir, study) / "dpo" / policy / "train_log.json"
        workflow = [{"step": e["step"], "loss": e["loss"]} for e in json.loads(log_file.read_text()) if "loss" in e]
        by_step = {e["step"]: e["loss"] for e in workflow}
        diffs = [abs(e["loss"] - by_step[e["step"]]) for e in naive if e["step"] in by_step]
        first = {"step": naive[0]["step"], "naive": naive[0]["loss"], "workflow": workflow[0]["loss"]}
        first_diff = abs(first["naive"] - first["workflow"]) if naive[0]["step"] == workflow[0]["step"] else math.inf
        checks.append(
            {
                "policy": policy,
                "first": first,
                "first_diff": first_diff,
                "max_diff": max(diffs, default=math.inf),
                "steps_compared": len(diffs),
                "passed": first_diff <= LOSS_TOLERANCE,
            }
        )
    return checks


def metric_checks(workdir: Path, study, variant: str, betas: list[float], seed: int) -> list[dict[str, Any]]:
    """Per (policy, temperature): reward and KL of both sides within NOISE_SIGMAS combined
    standard errors (the workflow's reward SE from its bootstrap CI; KL's from the naive
    samples, times sqrt(2) for two independent sample sets)."""
    z = NormalDist().inv_cdf(0.5 + study.evaluation.confidence_level / 2)  # 1.96 at 95%
    checks = []
    for beta in [None, *betas]:
        policy = policy_id(variant, beta, seed)
        naive = read_naive_point(workdir, policy)
        for label in (fmt(t) for t in study.temperatures):
            metrics_file = results_dir(workdir, study) / "evaluate" / policy / f"temp~{label}" / "metrics.json"
            wf = json.loads(metrics_file.read_text())
            nv = naive[label]
            reward_se = math.hypot(nv["reward_se"], (wf["reward_ci_high"] - wf["reward_ci_low"]) / (2 * z))
            kl_se = nv["kl_se"] * math.sqrt(2)
            reward_diff, kl_diff = abs(nv["reward_mean"] - wf["reward_mean"]), abs(nv["kl_mean"] - wf["kl_mean"])
            checks.append(
                {
                    "policy": policy,
                    "temperature": label,
                    "reward": {
                        "naive": nv["reward_mean"],
                        "workflow": wf["reward_mean"],
                        "diff": reward_diff,
                        "se": reward_se,
                        "passed": reward_diff <= NOISE_SIGMAS * reward_se,
                    },
                    "kl": {
                        "naive": nv["kl_mean"],
                        "workflow": wf["kl_mean"],
                        "diff": kl_diff,
                        "se": kl_se,
                        "passed": kl_diff <= NOISE_SIGMAS * kl_se,
                    },
                    "vader": {"naive": nv["vader_mean"], "workflow": wf.get("vader_mean")},
                    "length": {"naive": nv["length_mean"], "workflow": wf.get("length_mean")},
                }
            )
    return checks


# ---- the report -------------------------------------------------------------------------------
def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def print_report(report: dict[str, Any]) -> None:
    naive, workflow = report["naive"], report["workflow"]
    print(f"\nsub-grid: {report['study']}  betas {report['betas']}  seed {report['seed']}  --cores {report['cores']}")
    print(f"naive sweep:  {naive['wall_s']:8.1f} s  ({len(naive['points_s'])} processes)")
    for stage, seconds in naive["stages"].items():
        print(f"    {stage:<16} {seconds:8.1f} s")
    print(f"workflow:     {workflow['wall_s']:8.1f} s  ({len(workflow['jobs'])} jobs; job-seconds per rule:)")
    for rule, row in workflow["per_rule"].items():
        print(f"    {rule:<16} {row['seconds']:8.1f} s  {row['jobs']} job(s)")
    print(
        f"    {'job-seconds':<16} {sum(row['seconds'] for row in workflow['per_rule'].values()):8.1f} s  "
        "(summed over jobs, which overlap when --cores allows)"
    )
    if workflow.get("shared_jobs_rerun"):
        print(f"    WARNING: shared-input rules ran again in the timed launch: {workflow['shared_jobs_rerun']}")

    print("\nchecks:")
    for check in report["checks"]["losses"]:
        first = check["first"]
        print(
            f"  {verdict(check['passed'])} loss {check['policy']}: step {first['step']} naive {first['naive']:.6f} "
            f"workflow {first['workflow']:.6f} (|diff| {check['first_diff']:.2e} <= {LOSS_TOLERANCE:g}); "
            f"max |diff| over {check['steps_compared']} logged steps {check['max_diff']:.2e}"
        )
    for check in report["checks"]["metrics"]:
        for name in ("reward", "kl"):
            m = check[name]
            print(
                f"  {verdict(m['passed'])} {name:<6} {check['policy']} temp {check['temperature']}: "
                f"naive {m['naive']:.4f} workflow {m['workflow']:.4f} |diff| {m['diff']:.4f} "
                f"(limit {NOISE_SIGMAS:g} x SE {m['se']:.4f} = {NOISE_SIGMAS * m['se']:.4f})"
            )
    counts = report["checks"]["passed"]
    print(f"  passed: losses {counts['losses']}, reward {counts['reward']}, kl {counts['kl']}")
    print(f"\nworkflow / naive = {report['ratio']:.2f} (goal <= 0.50)")


def build_report(args, study, betas: list[float], naive: dict, workflow: dict) -> dict[str, Any]:
    losses = loss_checks(args.workdir, study, args.variant, betas, args.seed)
    metrics = metric_checks(args.workdir, study, args.variant, betas, args.seed)

    def count(passed: list[bool]) -> str:
        return f"{sum(passed)}/{len(passed)}"

    return {
        "config": str(args.config),
        "subgrid_config": str(subgrid_path(args.workdir)),
        "study": study.name,
        "variant": args.variant,
        "betas": betas,
        "seed": args.seed,
        "cores": args.cores,
        "naive": naive,
        "workflow": workflow,
        "ratio": workflow["wall_s"] / naive["wall_s"],
        "checks": {
            "losses": losses,
            "metrics": metrics,
            "passed": {
                "losses": count([c["passed"] for c in losses]),
                "reward": count([c["reward"]["passed"] for c in metrics]),
                "kl": count([c["kl"]["passed"] for c in metrics]),
            },
        },
    }


def read_timing(path: Path, flag: str) -> dict:
    if not path.is_file():
        sys.exit(f"{flag}: no earlier timing at {path}; run that side first")
    return json.loads(path.read_text())


# ---- entry point --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--variant", default="dpo")
    parser.add_argument("--betas", type=float, nargs="+", help="default: the variant's betas in the config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dpolab-naive-sweep"))
    parser.add_argument("--out", type=Path, help="default: <workdir>/naive_sweep.json")
    parser.add_argument("--skip-naive", action="store_true", help="reuse the naive side's last results in the workdir")
    parser.add_argument(
        "--skip-workflow", action="store_true", help="reuse the workflow side's last results in the workdir"
    )
    parser.add_argument("--point", help=argparse.SUPPRESS)  # internal: one naive grid point (sft or a beta)
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.config = args.config.resolve()
    args.out = (args.out or args.workdir / "naive_sweep.json").resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.point:
        run_point(args.point, args.workdir, args.variant, args.seed, args.cores)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    _, betas = write_subgrid_config(args.config, args.variant, args.betas, args.seed, args.workdir)
    study = load_subgrid(args.workdir)

    print(f"shared inputs (untimed): SFT model, pairs, test prompts, gold judge in {results_dir(args.workdir, study)}")
    print(f"    {make_shared_inputs(args.workdir, study, args.cores):.1f} s")
    if args.skip_naive:
        naive = read_timing(naive_dir(args.workdir) / "timing.json", "--skip-naive")
    else:
        print("naive sweep (timed) ...", flush=True)
        naive = run_naive(args.workdir, args.variant, betas, args.seed, args.cores)
    if args.skip_workflow:
        workflow = read_timing(args.workdir / "workflow_timing.json", "--skip-workflow")
    else:
        print("workflow (timed) ...", flush=True)
        workflow = run_workflow(args.workdir, study, args.cores)

    report = build_report(args, study, betas, naive, workflow)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
