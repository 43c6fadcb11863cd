"""The scale-out paths on a copy of the finished smoke study (its SFT model, pairs and reference
log-probs): a DPO job in two processes (accelerate launch, DDP over gloo) against the same job in
one process with the same global batch, and a study whose policies are LoRA adapters through
generate (shared vLLM engines), evaluate, compare and summary."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.workflow import copy_study, store

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
# mtime only: the copied outputs have no Snakemake metadata to compare code or params with
COMMON = ["--rerun-triggers", "mtime", "--configfile", "configs/smoke.yaml"]
POLICY = "results/smoke/dpo/variant~dpo/beta~0.1/seed~0"
# A longer curve than the smoke study's two steps, at the smoke study's global batch of 4 pairs,
# within the first epoch: its last, partial batch is not the same in two processes (Accelerate
# pads it with pairs from the start so both processes step; the metrics it gathers leave them out)
STEPS = 6
CURVE = f"dpo={{max_steps: {STEPS}, batch_size: 4, logging_steps: 1, learning_rate: 1.0e-4, max_length: 32}}"
# The two runs see the same batches; the sums over them differ only in float rounding (each
# process forms its half of the batch, DDP averages the two halves' gradients)
LOSS_TOLERANCE = 1e-4


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([SNAKEMAKE, *args, *COMMON], cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-6000:]
    return done


def train_log(path: Path) -> list[dict]:
    """The logged steps, with the run's perf/* figures (logged once, at the end) in the last."""
    entries = json.loads(path.read_text())
    steps = [entry for entry in entries if "loss" in entry]
    steps[-1] = {**steps[-1], **next(entry for entry in entries if "perf/trained_tokens" in entry)}
    return steps


@pytest.fixture(scope="module")
def ddp_runs(smoke_studies, tmp_path_factory):
    """The dpo job of one grid point trained twice: one process, then two."""
    work = copy_study(smoke_studies.sqlite, tmp_path_factory.mktemp("ddp") / "work")
    assert len(pd.read_parquet(work / "results/smoke/pairs/pairs.parquet")) >= 4 * STEPS  # full batches only
    target = f"{POLICY}/train_log.json"
    snakemake(work, target, "--forcerun", "dpo", "--cores", "2", "--config", CURVE)
    one = train_log(work / target)
    two_processes = snakemake(
        work,
        target,
        "--forcerun",
        "dpo",
        "--cores",
        "2",
        "--config",
        CURVE,
        "distributed={strategy: ddp, gpus_per_job: 2}",
    )
    return work, one, train_log(work / target), two_processes


def test_two_processes_follow_the_one_process_loss_curve(ddp_runs):
    work, one, two, _ = ddp_runs
    assert [e["step"] for e in one] == [e["step"] for e in two] == list(range(1, STEPS + 1))
    for key in ("loss", "rewards/margins", "logps/chosen"):
        assert [e[key] for e in two] == pytest.approx([e[key] for e in one], rel=LOSS_TOLERANCE, abs=LOSS_TOLERANCE), (
            key
        )
    assert one[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # the shared reference: log 2 at step 0
    # the policy moved, so the curves compared are not log 2 throughout: an unchanged policy scores
    # every later batch at log 2 too (whether a 6-step loss is lower at the end is up to the batches)
    assert max(abs(e["loss"] - math.log(2)) for e in one[1:]) > 1e-3
    assert max(abs(e["rewards/margins"]) for e in one[1:]) > 1e-3


def test_two_processes_ran_and_rank_0_logged_once(ddp_runs):
    work, one, two, _ = ddp_runs
    log = (work / "results/smoke/logs/dpo/variant~dpo/beta~0.1/seed~0.log").read_text()
    assert "launching 2 training processes: accelerate launch --config_file" in log
    assert "rank 1 of 2" in log
    job = json.loads((work / "results/smoke/logs/dpo/variant~dpo/beta~0.1/seed~0.log.job.json").read_text())
    assert job["rule"] == "dpo" and job["wildcards"]["names"] == {"variant": "dpo", "beta": "0.1", "seed": "0"}
    # throughput counts both processes' tokens: the same batches as the one process trained on
    assert two[-1]["perf/trained_tokens"] == one[-1]["perf/trained_tokens"] > 0
    _, info, client, runs = store(work)
    named = [r for r in runs if r.info.run_name == "dpo/variant~dpo/beta~0.1/seed~0"]
    # the smoke study's run, the one-process rerun and the two-process one: three, not four
    assert len(named) == 3, [r.info.run_name for r in named]
    latest = max(named, key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED"
    assert latest.data.params["distributed.strategy"] == "ddp" and latest.data.params["distributed.gpus_per_job"] == "2"
    history = client.get_metric_history(latest.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # each step logged once, by rank 0
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([e["loss"] for e in two], rel=1e-6)


LORA_GRID = ["dpo", "ipo", "kto", "orpo"]


@pytest.fixture(scope="module")
def lora_study(smoke_studies, tmp_path_factory):
    """The smoke study's policies trained again as LoRA adapters (rank 8) on its SFT model (ORPO:
    on the base model), each also saved at step 1 of 2 (evaluation.checkpoints), four adapters per
    shared vLLM engine, through evaluate, compare and summary."""
    import shutil

    work = copy_study(smoke_studies.sqlite, tmp_path_factory.mktemp("lora") / "work")
    study = work / "results" / "smoke"
    # the full fine-tuning policies and everything made from them go; the SFT model, pairs,
    # reference log-probs and the SFT policy's samples stay
    shutil.rmtree(study / "dpo")
    for stage in ("generate", "evaluate"):
        for folder in (study / stage).glob("variant~*"):
            shutil.rmtree(folder)
    for made_from_them in ("compare", "plots", "summary.csv", "summary.html"):  # else up to date by mtime
        path = study / made_from_them
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    # LoRA's usual learning rate is an order of magnitude above full fine-tuning's: 2 steps move the adapters
    done = snakemake(
        work,
        "--cores",
        "2",
        "--config",
        "peft={r: 8, lora_alpha: 16}",
        "dpo={learning_rate: 5.0e-3}",
        f"grid={{variants: [{', '.join(LORA_GRID)}], betas: [0.1], seeds: [0]}}",
        "generation={lora_serving: shared, adapters_per_engine: 4}",
        "evaluation={checkpoints: [1]}",
    )
    return work, done


def test_lora_policies_are_adapters_and_the_study_completes(lora_study):
    work, done = lora_study
    study = work / "results" / "smoke"
    for variant in LORA_GRID:
        model = study / "dpo" / f"variant~{variant}" / "beta~0.1" / "seed~0" / "model"
        assert (model / "adapter_config.json").is_file() and not list(model.glob("model*.safetensors")), variant
    table = pd.read_csv(study / "summary.csv")
    assert set(table["variant"]) == {"sft", *LORA_GRID}
    trained = table[table["variant"] != "sft"]
    assert trained["kl_mean"].notna().all() and (trained["kl_mean"].abs() > 0).all()
    assert (table.loc[table["variant"] == "sft", "kl_mean"] == 0).all()
    assert trained["win_rate"].between(0, 1).all()

    # the adapters changed what the policies sample (the same seeds as SFT's samples)
    def completions(folder: Path) -> list:
        return [json.loads(line)["completion_token_ids"] for line in (folder / "temp~1" / "samples.jsonl").open()]

    for variant in LORA_GRID:
        assert completions(study / "generate" / f"variant~{variant}" / "beta~0.1" / "seed~0") != completions(
            study / "generate" / "sft"
        ), variant
    assert (study / "compare" / "win_rates.csv").is_file() and (study / "plots" / "reward_vs_kl.png").is_file()
    # generation: two shared engines for the adapters of dpo, ipo and kto and their checkpoints (4 + 2);
    # ORPO's adapter and its checkpoint (on the base model) merged, each in its own engine
    ran = done.stderr
    assert (
        "rule generate_adapters_0:" in ran and "rule generate_adapters_1:" in ran and "generate_adapters_2" not in ran
    )
    first_batch = (study / "logs" / "generate" / "adapters_0.log").read_text()
    assert "(1 of 4 in this engine)" in first_batch and "(4 of 4 in this engine)" in first_batch
    assert "(2 of 2 in this engine)" in (study / "logs" / "generate" / "adapters_1.log").read_text()
    assert (study / "benchmarks" / "generate" / "adapters_0.tsv").is_file()


def test_checkpoints_are_evaluated_and_trace_curves(lora_study):
    work, _ = lora_study
    study = work / "results" / "smoke"
    for variant in LORA_GRID:  # each policy's adapter at step 1, sampled and evaluated as a policy of its own
        checkpoint = study / "dpo" / f"variant~{variant}" / "beta~0.1" / "seed~0" / "step~1" / "model"
        assert (checkpoint / "adapter_config.json").is_file(), variant
        metrics = json.loads(
            (
                study / "evaluate" / f"variant~{variant}" / "beta~0.1" / "seed~0" / "step~1" / "temp~1" / "metrics.json"
            ).read_text()
        )
        assert metrics["step"] == 1 and metrics["variant"] == variant and math.isfinite(metrics["kl_mean"])
    curves = pd.read_csv(study / "checkpoints.csv")
    trained = curves[curves["variant"] != "sft"]
    assert set(trained["variant"]) == set(LORA_GRID) and sorted(trained["step"].unique()) == [1, 2]
    assert len(trained) == len(LORA_GRID) * 2 * 2  # (step 1, step 2) x 2 temperatures
    # the final step's point is the summary's
    table = pd.read_csv(study / "summary.csv")
    final = trained[trained["step"] == 2].merge(table[table["judge"] == "gold"], on=["variant", "beta", "temperature"])
    assert final["kl_mean_x"].to_numpy() == pytest.approx(final["kl_mean_y"].to_numpy())
    # checkpoints stay out of the pairwise comparisons
    assert not pd.read_csv(study / "compare" / "win_rates.csv")["policy"].str.contains("step~").any()
    series = json.loads((study / "plots" / "series.json").read_text())["checkpoint_frontier"]
    assert len(series["labels"]) == len(set(series["labels"])) == len(LORA_GRID) * 2
    assert (study / "plots" / "checkpoint_frontier.png").stat().st_size > 5000
    # MLflow: the curves on the study run against the step; each evaluation at its training step
    _, _, client, runs = store(work)
    parent = json.loads((study / "mlflow" / "study_run.json").read_text())["parent_run_id"]
    history = client.get_metric_history(parent, "checkpoints/dpo/beta_0.1/temp_1/reward_mean")
    assert sorted(m.step for m in history) == [0, 1, 2]
    evaluation = [r for r in runs if r.info.run_name == "evaluate/policy~variant~dpo/beta~0.1/seed~0/step~1"]
    assert evaluation and client.get_metric_history(evaluation[-1].info.run_id, "kl_mean/temp_1")[0].step == 1


def test_lora_runs_in_mlflow(lora_study):
    work, _ = lora_study
    _, _, client, runs = store(work)
    latest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        latest[run.info.run_name] = run
    for variant in LORA_GRID:
        name = f"variant~{variant}/beta~0.1/seed~0"
        training = latest[f"{'dpo' if variant in ('dpo', 'ipo') else variant}/{name}"]
        assert training.data.tags["policy_format"] == "lora_adapter" and training.data.params["peft.r"] == "8"
        artifacts = {a.path for a in client.list_artifacts(training.info.run_id, "model")}
        assert "model/adapter_config.json" in artifacts and "model/adapter_model.safetensors" in artifacts
        generation = latest[f"generate/policy~{name}"]
        assert generation.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(generation.info.run_id, "generations")}
