"""The smoke study on a real SLURM (tests/slurm/start.sh: slurmctld, slurmd and munged on
127.0.0.1) through `snakemake --profile profiles/slurm`, beside the same study run locally
(tests/e2e/conftest.py: smoke_studies). Every job must run as a SLURM job, the outputs and MLflow runs must
match the local run's, and two lost jobs (one cancelled with scancel, one past its time limit)
must be reported and recovered by a rerun."""

import json
import re
from datetime import datetime
from pathlib import Path
from statistics import mean, median

import pandas as pd

from dpolab.config import read_study
from dpolab.resources import job_resources, model_params
from helpers.workflow import SLURM_GRID, local_only, store

# what differs by design between the two runs' results/: the local run's sqlite store and
# artifacts live there, the SLURM run's on the tracking server; the engine cache; and what the
# browser tests add (screenshots, and report.html, made from the local run)
NOT_COMPARED = ("mlflow.db", "mlartifacts/", "vllm-cache/", "screenshots/", "report.html")


def study_files(work: Path) -> set[str]:
    """The study's files that both runs make (not those of the variants trained locally only)."""
    study = work / "results" / "smoke"
    files = {p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file()}
    return {f for f in files if not f.startswith(NOT_COMPARED) and "/trainer/" not in f and not local_only(f)}


def job_timings(output: str) -> list[dict]:
    """From a Snakemake run's output: each job's launch and finish time (the timestamps Snakemake
    prints before `rule X:` and `Finished jobid: N`) and its benchmark file."""
    jobs, stamp, current = {}, None, None
    for line in output.splitlines():
        if match := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]", line.strip()):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := re.match(r"(?:local)?rule (\w+):$", line):
            current = {"rule": match.group(1), "launched": stamp}
        elif current is not None and (match := re.match(r"\s+jobid: (\d+)$", line)):
            jobs[int(match.group(1))] = current
        elif current is not None and (match := re.match(r"\s+benchmark: (\S+)$", line)):
            current["benchmark"] = match.group(1)
        elif match := re.match(r"Job (\d+) has been submitted with SLURM jobid (\d+)", line):
            jobs[int(match.group(1))]["slurm_job_id"] = match.group(2)
        elif match := re.match(r"Finished jobid: (\d+)", line):
            jobs[int(match.group(1))]["finished"] = stamp
    return [job for job in jobs.values() if "finished" in job]


def overheads(output: str, work: Path) -> list[float]:
    """Seconds each finished job spent outside its own work: launch to finish as Snakemake saw
    it, minus the job's benchmarked wall time (the script itself)."""
    found = []
    for job in job_timings(output):
        if "benchmark" not in job:  # the target rule `all`
            continue
        bench = pd.read_csv(work / job["benchmark"], sep="\t")
        found.append((job["finished"] - job["launched"]).total_seconds() - float(bench["s"].iloc[-1]))
    return found


def test_every_job_ran_as_a_slurm_job(smoke_studies):
    info, client, runs = store(smoke_studies.server_work)[1:]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    local_runs = store(smoke_studies.sqlite)[3]
    # the parent (rule mlflow_study) and one run per job, as in the local run (whose store
    # tests/e2e/test_mlflow.py counts job by job against the config), but for the variants trained locally only
    local_finished = [r.info.run_name for r in local_runs if r.info.status == "FINISHED"]
    assert any(map(local_only, local_finished)) and not any(local_only(r.info.run_name) for r in runs)
    assert sorted(r.info.run_name for r in finished) == sorted(n for n in local_finished if not local_only(n))
    job_ids = [r.data.tags.get("slurm_job_id") for r in finished]
    assert all(job_id and job_id.isdigit() for job_id in job_ids), [
        r.info.run_name for r in finished if not r.data.tags.get("slurm_job_id")
    ]
    assert len(set(job_ids)) == len(job_ids)
    host = smoke_studies.cluster.command("hostname", "-s").strip()
    assert {r.data.tags["slurm_nodelist"] for r in finished} == {host}
    # each job's SLURM log, named by its job id, is where the plugin says it is
    submitted = dict(
        re.findall(
            r"submitted with SLURM jobid (\d+) \(log: (\S+)\)\.",
            smoke_studies.faulty_launch.stdout + smoke_studies.rerun.stdout,
        )
    )
    for run in finished:
        log = Path(submitted[run.data.tags["slurm_job_id"]])
        assert log.is_file() and log.name == f"{run.data.tags['slurm_job_id']}.log"
        assert f"rule_{run.data.tags['rule']}" in log.parts, (run.info.run_name, log)
    # and the local run has none: the comparison below is local vs SLURM
    assert local_runs and not any("slurm_job_id" in r.data.tags for r in local_runs)


def test_outputs_match_the_local_run(smoke_studies):
    local, slurm = study_files(smoke_studies.sqlite), study_files(smoke_studies.server_work)
    assert local == slurm, {"only local": sorted(local - slurm), "only SLURM": sorted(slurm - local)}
    local_study, slurm_study = (
        smoke_studies.sqlite / "results" / "smoke",
        smoke_studies.server_work / "results" / "smoke",
    )
    # the data stage is deterministic: the same prompts and SFT texts, value for value
    for name in ("prompts_train", "prompts_test", "sft_train", "sft_eval"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(local_study / "data" / f"{name}.parquet"),
            pd.read_parquet(slurm_study / "data" / f"{name}.parquet"),
        )
    # the summary: the same columns and the same (policy, temperature, judge) rows, those of the
    # variants trained locally only aside
    local_summary, slurm_summary = (
        pd.read_csv(local_study / "summary_by_seed.csv"),
        pd.read_csv(slurm_study / "summary_by_seed.csv"),
    )
    local_summary = local_summary[~local_summary["policy"].map(local_only)]
    assert set(slurm_summary["variant"]) == set(SLURM_GRID) | {"sft"}
    assert list(local_summary.columns) == list(slurm_summary.columns)
    keys = ["policy", "temperature", "judge"]
    assert (
        local_summary[keys].sort_values(keys).values.tolist() == slurm_summary[keys].sort_values(keys).values.tolist()
    )


def test_two_launches_agree_byte_for_byte(smoke_studies):
    """Determinism: the same study launched twice from nothing (locally, three jobs side by side
    against sqlite; on SLURM, in another order, against a tracking server, with two jobs lost and
    rerun) writes the same bytes for every stage they share: the SFT model, the pairs, every shared
    policy's weights and vLLM samples, and every figure of its evaluation. Every job's numbers
    depend only on its inputs, seeds and thread count. (Their summaries differ in the LC fits and
    comparisons, which the local grid's extra variants join.)"""
    local, slurm = smoke_studies.sqlite / "results" / "smoke", smoke_studies.server_work / "results" / "smoke"
    temperatures = read_study(smoke_studies.sqlite / "configs" / "smoke.yaml").temperatures
    shared = ["sft"] + [f"variant~{v}/beta~0.1/seed~0" for v in SLURM_GRID]
    files = ["sft/model/model.safetensors", "pairs/pairs.parquet"]
    for policy in shared[1:]:
        files.append(f"dpo/{policy}/model/model.safetensors")
    for policy in shared:
        files += [f"generate/{policy}/temp~{t:g}/samples.jsonl" for t in temperatures]
        files += [f"evaluate/{policy}/temp~{t:g}/metrics.json" for t in temperatures]
    for name in files:
        assert (local / name).read_bytes() == (slurm / name).read_bytes(), name
    by_seed = [
        pd.read_csv(study / "summary_by_seed.csv").set_index(["policy", "temperature", "judge"]).sort_index()
        for study in (local, slurm)
    ]
    common = by_seed[1].index
    columns = [
        "reward_mean",
        "reward_ci_low",
        "kl_mean",
        "win_rate",
        "win_rate_ci_low",
        "win_rate_vs_chosen",
        "length_mean",
    ]
    pd.testing.assert_frame_equal(by_seed[0].loc[common, columns], by_seed[1][columns])


def test_scancel_is_reported_and_the_rerun_completes(smoke_studies):
    faulty, cancelled = smoke_studies.faulty_launch, smoke_studies.lost["cancelled"]
    assert faulty.returncode != 0
    assert "Error in rule pairs" in faulty.stdout, faulty.stdout[-4000:]
    assert f"SLURM-job '{cancelled['slurm_job_id']}' failed, SLURM status is: 'CANCELLED'" in faulty.stdout
    _, client, runs = store(smoke_studies.server_work)[1:]
    run = client.get_run(cancelled["run_id"])
    # SLURM sent SIGTERM; the job's handler ended its run before the process went
    assert run.info.status == "KILLED" and run.data.tags["ended_by"] == "SIGTERM"
    assert sorted(r.info.status for r in runs if r.info.run_name == run.info.run_name) == ["FINISHED", "KILLED"]
    # the rerun resumed: what the first launch finished (data, judge, SFT...) was kept, not redone
    assert smoke_studies.rerun.returncode == 0
    assert "rule sft:" in faulty.stdout and "rule sft:" not in smoke_studies.rerun.stdout
    assert (smoke_studies.server_work / "results" / "smoke" / "summary.csv").is_file()


def test_time_limit_is_reported_and_the_rerun_completes(smoke_studies):
    faulty, timed_out = smoke_studies.faulty_launch, smoke_studies.lost["timed_out"]
    # the job had been submitted with the rule's runtime resource as its time limit (--time)
    study = read_study(smoke_studies.server_work / "configs" / "smoke.yaml")
    runtime = job_resources("generate", study, model_params(study.config["model"]))["runtime"]
    assert timed_out["time_limit"] == f"{runtime}:00"
    assert "Error in rule generate" in faulty.stdout, faulty.stdout[-4000:]
    assert f"SLURM-job '{timed_out['slurm_job_id']}' failed, SLURM status is: 'TIMEOUT'" in faulty.stdout
    _, client, runs = store(smoke_studies.server_work)[1:]
    run = client.get_run(timed_out["run_id"])
    # At the limit SLURM sends SIGTERM and, KillWait seconds later, SIGKILL: the run ends KILLED
    # by the job's own handler, or, when the job is killed before it has ended its run (a step
    # shell dying first, a slow store), it is closed KILLED when the next launch starts.
    assert run.info.status == "KILLED"
    assert run.data.tags["ended_by"] in (
        "SIGTERM",
        "closed when the workflow restarted",
        "closed by a later launch of its job",
    ), run.data.tags["ended_by"]
    print("time-limited job's run ended by:", run.data.tags["ended_by"])
    assert sorted(r.info.status for r in runs if r.info.run_name == "generate/policy~sft") == ["FINISHED", "KILLED"]
    # SLURM's own words in the job's log
    log = next((smoke_studies.server_work / ".snakemake" / "slurm_logs").rglob(f"{timed_out['slurm_job_id']}.log"))
    assert "DUE TO TIME LIMIT" in log.read_text()


def test_slurm_overhead_per_job(smoke_studies):
    """Measured, not asserted against a time: what a SLURM job costs beside the same job run
    locally (submission, a second Snakemake start inside the job, squeue polling)."""
    slurm = overheads(smoke_studies.faulty_launch.stdout, smoke_studies.server_work) + overheads(
        smoke_studies.rerun.stdout, smoke_studies.server_work
    )
    local = overheads(smoke_studies.local_output, smoke_studies.sqlite)
    # every finished job of each run was found in its output: one per finished MLflow run
    n_local = sum(r.info.status == "FINISHED" for r in store(smoke_studies.sqlite)[3])
    n_slurm = sum(r.info.status == "FINISHED" for r in store(smoke_studies.server_work)[3])
    assert len(local) == n_local and len(slurm) == n_slurm, (len(local), n_local, len(slurm), n_slurm)
    assert min(slurm) > 0  # a SLURM job's turnaround includes its own benchmarked wall time
    figures = {
        "slurm_wall_s": round(smoke_studies.slurm_wall_s),
        "both_studies_wall_s": round(smoke_studies.wall_s),
        "slurm_overhead_s": {
            "mean": round(mean(slurm), 1),
            "median": round(median(slurm), 1),
            "max": round(max(slurm), 1),
        },
        "local_overhead_s": {
            "mean": round(mean(local), 1),
            "median": round(median(local), 1),
            "max": round(max(local), 1),
        },
    }
    (smoke_studies.server_work / "slurm_overhead.json").write_text(json.dumps(figures, indent=2))
    print("SLURM vs local per-job overhead:", json.dumps(figures))
