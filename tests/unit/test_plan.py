"""dpolab.plan: the cluster plan printed after a dry run. Pinned: job_stats reads the rule counts
from the last "Job stats:" table of the dry run (the table Snakemake prints, built here with
tabulate as Snakemake builds it), without the total and stopping at the table's end, and refuses
output without one; plan_rows sizes each rule's jobs from dpolab.resources (kto/orpo as dpo,
preference_data as data, a shared-engine generate_adapters_<i> job as one engine start plus each
of its policies' sampling time), skips `all`, and multiplies jobs x GPUs x hours; format_plan's
table and totals; `python -m dpolab.plan`'s main."""

import copy

import pytest
import yaml
from tabulate import tabulate

from dpolab.config import ROOT, load_study
from dpolab.plan import STARTUP_MINUTES, format_plan, job_stats, main, plan_rows, rule_resources
from dpolab.resources import job_resources, model_params

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def _study(**sections):
    config = copy.deepcopy(SMOKE)
    config.update(sections)
    return load_study(config, check_environment=False)


def _job_stats(counts: dict) -> str:
    """The table `snakemake -n` prints (snakemake.dag.DAG.stats)."""
    rows = [{"job": rule, "count": n} for rule, n in counts.items()]
    rows.append({"job": "total", "count": sum(counts.values())})
    return "Job stats:\n" + tabulate(rows, headers="keys") + "\n"


@pytest.fixture(scope="module")
def smoke():
    study = _study()
    return study, model_params(study.config["model"])


def test_job_stats_reads_the_rule_counts_without_the_total():
    counts = {"all": 1, "data": 1, "dpo": 3, "generate_adapters_0": 1, "evaluate": 12}
    output = "Building DAG of jobs...\n" + _job_stats(counts) + "\nrule data:\n    output: x\n\nThis was a dry-run."
    assert job_stats(output) == counts


def test_job_stats_takes_the_last_table():
    output = _job_stats({"all": 1, "dpo": 9}) + "\n...\n" + _job_stats({"all": 1, "dpo": 2, "summary": 1})
    assert job_stats(output) == {"all": 1, "dpo": 2, "summary": 1}


def test_job_stats_stops_at_the_end_of_the_table():
    output = _job_stats({"dpo": 2}) + "\nreason 5\n"  # after the table's blank line, nothing is read
    assert job_stats(output) == {"dpo": 2}


def test_a_dry_run_without_job_stats_is_refused():
    with pytest.raises(ValueError, match="no 'Job stats:' table"):
        job_stats("Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).")


def test_rule_variants_and_preference_data_are_sized_as_their_stage(smoke):
    study, n_params = smoke
    assert rule_resources("kto", study, n_params) == job_resources("dpo", study, n_params)
    assert rule_resources("orpo", study, n_params) == job_resources("dpo", study, n_params)
    assert rule_resources("preference_data", study, n_params) == job_resources("data", study, n_params)
    assert rule_resources("generate", study, n_params) == job_resources("generate", study, n_params)


def test_a_shared_engine_job_pays_one_start_and_each_policys_sampling(smoke):
    _, n_params = smoke
    study = _study(
        peft={"r": 4}, generation={**SMOKE["generation"], "lora_serving": "shared", "adapters_per_engine": 2}
    )
    assert study.adapter_batches == [["variant~dpo/beta~0.1/seed~0", "variant~kto/beta~0.1/seed~0"]]
    one = job_resources("generate", study, n_params)
    shared = rule_resources("generate_adapters_0", study, n_params)
    assert shared["mem_mb"] == one["mem_mb"]  # one engine
    assert shared["runtime"] == STARTUP_MINUTES + 2 * (one["runtime"] - STARTUP_MINUTES)


def test_plan_rows_skip_all_and_multiply_jobs_gpus_and_hours():
    study = _study(device="cuda")
    n_params = model_params(study.config["model"])
    rows = plan_rows(study, n_params, {"all": 1, "data": 1, "dpo": 3})
    assert [row["rule"] for row in rows] == ["data", "dpo"]
    data, dpo = rows
    dpo_resources = job_resources("dpo", study, n_params)
    assert dpo["jobs"] == 3 and dpo["gpus_per_job"] == dpo_resources["gpu"] == 1 and dpo["nodes"] == 1
    assert dpo["hours_per_job"] == dpo_resources["runtime"] / 60
    assert dpo["mem_gb"] == dpo_resources["mem_mb"] / 1024
    assert dpo["gpu_hours"] == pytest.approx(3 * 1 * dpo["hours_per_job"])
    assert dpo["job_hours"] == pytest.approx(3 * dpo["hours_per_job"])
    assert data["gpus_per_job"] == 0 and data["gpu_hours"] == 0  # the data job needs no GPU


def test_format_plan_prints_a_row_per_rule_and_the_totals():
    study = _study(device="cuda")
    rows = plan_rows(study, model_params(study.config["model"]), {"all": 1, "data": 1, "dpo": 3, "generate": 4})
    text = format_plan(study, rows)
    lines = text.splitlines()
    assert lines[0].startswith("Plan of study smoke (cuda;")
    assert lines[1].split() == ["rule", "jobs", "GPUs/job", "nodes", "mem", "GB", "h/job", "job-h", "GPU-h"]
    table = {line.split()[0]: line.split() for line in lines[3:6]}
    assert set(table) == {"data", "dpo", "generate"}
    assert table["dpo"][1:3] == ["3", "1"]
    total = next(line.split() for line in lines if line.startswith("total "))
    assert total[1] == "8"  # jobs of every rule but `all`
    assert total[-1] == f"{sum(row['gpu_hours'] for row in rows):.1f}"
    assert total[-2] == f"{sum(row['job_hours'] for row in rows):.1f}"  # under job-h, not h/job
    dpo = next(row for row in rows if row["rule"] == "dpo")
    assert table["dpo"][-2] == f"{dpo['job_hours']:.1f}" and dpo["job_hours"] == 3 * dpo["hours_per_job"]
    assert lines[-1] == "largest job: 1 GPUs; GPU-hours are the sum of jobs x GPUs x requested hours"


def test_a_cpu_plan_has_no_gpu_line(smoke):
    study, n_params = smoke
    text = format_plan(study, plan_rows(study, n_params, {"all": 1, "dpo": 1}))
    assert "largest job" not in text and text.splitlines()[-1].split()[-1] == "0.0"


def test_main_prints_the_plan_of_a_config_and_a_dry_run_file(tmp_path, capsys):
    dry_run = tmp_path / "dry_run.txt"
    dry_run.write_text(_job_stats({"all": 1, "data": 1, "kto": 1}))
    assert main([str(ROOT / "configs" / "smoke.yaml"), str(dry_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan of study smoke (cpu;") and "\nkto " in out and "\ndata " in out


def test_main_refuses_wrong_arguments_and_a_broken_config(tmp_path, capsys):
    assert main(["only-one-argument"]) == 2
    assert "usage: python -m dpolab.plan" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**SMOKE, "grid": {**SMOKE["grid"], "variants": ["nope"]}}))
    assert main([str(broken), str(tmp_path / "unused.txt")]) == 1
    assert f"{broken}: grid.variants.0: unknown variant 'nope'" in capsys.readouterr().err
