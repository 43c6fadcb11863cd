"""dpolab.launch: several training processes for one Snakemake job through `accelerate launch`.
Pinned: each strategy's shipped Accelerate config; the launch command of a one-node job (the
config, processes, machines, mixed precision, then `-m dpolab.launch <job.json>`; the config
relative to the repository for dry runs) and of a several-node job (one launcher per node under
srun, the node rank and head node read on the node); a job's JSON spec rebuilds the same
`snakemake` object a script gets (named and partly named parts, threads, resources, config,
scriptdir); rank/world size/launched from torchrun's variables; main() runs a script with it."""

import json
import shlex

import pytest
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

from dpolab.config import ROOT
from dpolab.launch import (
    ACCELERATE_CONFIGS,
    HEAD_NODE,
    RENDEZVOUS_PORT,
    accelerate_config,
    in_launched_process,
    job_file,
    job_spec,
    launch_command,
    main,
    rank,
    rebuild_snakemake,
    world_size,
)
from dpolab.settings import DistributedSettings, TrainingSettings


def _snakemake(input_files=None, scriptdir="/repo/workflow/scripts"):
    return Snakemake(
        input_files
        or InputFiles(fromdict={"study_run": "results/s/mlflow/study_run.json", "start": "results/s/sft/model"}),
        OutputFiles(
            fromdict={"model": "results/s/variant~dpo/model", "train_log": "results/s/variant~dpo/train_log.json"}
        ),
        Params(fromdict={"steps": 4, "name": "dpo"}),
        Wildcards(fromdict={"variant": "dpo", "beta": "0.1", "seed": "0"}),
        4,
        ResourceList(fromdict={"_cores": 4, "_nodes": 1, "mem_mb": 3254, "runtime": 15, "tmpdir": "/tmp"}),
        Log(toclone=["results/s/logs/dpo/variant~dpo.log"]),
        {"study": "s", "dpo": {"max_steps": 2}, "grid": {"betas": [0.1]}},
        "dpo",
        None,
        scriptdir=scriptdir,
    )


def _round_trip(snakemake, script):
    return rebuild_snakemake(json.loads(json.dumps(job_spec(snakemake, script))))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_each_sharding_strategy_has_a_shipped_accelerate_config(strategy):
    path = accelerate_config(strategy)
    assert path == ROOT / "envs" / "accelerate" / f"{strategy}.yaml" and path.is_file()
    assert path.parent == ACCELERATE_CONFIGS


def test_a_one_node_job_is_one_accelerate_launch():
    distributed = DistributedSettings(device="cpu", strategy="ddp", gpus_per_job=2)
    command = launch_command(distributed, TrainingSettings(device="cpu"), "logs/dpo.log.job.json")
    assert shlex.split(command) == [
        "accelerate",
        "launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / "ddp.yaml"),
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "dpolab.launch",
        "logs/dpo.log.job.json",
    ]


def test_a_dry_run_shows_the_config_relative_to_the_repository():
    distributed = DistributedSettings(device="cuda", strategy="fsdp", gpus_per_job=4)
    command = launch_command(distributed, TrainingSettings(device="cuda"), "job.json", relative_to=ROOT)
    words = shlex.split(command)
    assert words[words.index("--config_file") + 1] == "envs/accelerate/fsdp.yaml"
    assert words[words.index("--mixed_precision") + 1] == "bf16"  # the cuda default precision
    assert words[words.index("--num_processes") + 1] == "4"


def test_a_several_node_job_runs_one_launcher_per_node_under_srun():
    distributed = DistributedSettings(device="cuda", strategy="deepspeed_zero3", gpus_per_job=8, nodes=2)
    command = launch_command(distributed, TrainingSettings(device="cuda", precision="fp16"), "job.json")
    words = shlex.split(command)
    assert words[:7] == ["srun", "--nodes", "2", "--ntasks-per-node", "1", "bash", "-c"] and len(words) == 8
    per_node = words[7]  # what bash runs on each node: the node's variables expand there
    assert '--machine_rank "$SLURM_NODEID"' in per_node and f"--main_process_ip {HEAD_NODE}" in per_node
    node_words = shlex.split(per_node)
    assert node_words[node_words.index("--num_processes") + 1] == "16"  # every process of the job
    assert node_words[node_words.index("--num_machines") + 1] == "2"
    assert node_words[node_words.index("--mixed_precision") + 1] == "fp16"
    assert node_words[node_words.index("--main_process_port") + 1] == str(RENDEZVOUS_PORT)
    assert node_words[-3:] == ["-m", "dpolab.launch", "job.json"]


def test_job_spec_is_json_and_names_the_script_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = json.loads(json.dumps(job_spec(_snakemake(), "dpo.py")))
    assert spec["script"] == str(tmp_path / "dpo.py") and spec["rule"] == "dpo" and spec["threads"] == 4
    assert spec["wildcards"] == {"names": {"variant": "dpo", "beta": "0.1", "seed": "0"}, "items": ["dpo", "0.1", "0"]}


def test_a_rebuilt_job_is_the_snakemake_object_the_script_got():
    original = _snakemake()
    rebuilt = _round_trip(original, "dpo.py")
    for part in ("input", "output", "params", "wildcards", "log", "resources"):
        assert list(getattr(rebuilt, part)) == list(getattr(original, part)), part
        assert dict(getattr(rebuilt, part).items()) == dict(getattr(original, part).items()), part
    assert rebuilt.input.study_run == "results/s/mlflow/study_run.json" and rebuilt.wildcards.beta == "0.1"
    assert rebuilt.log[0] == "results/s/logs/dpo/variant~dpo.log" and rebuilt.resources.mem_mb == 3254
    assert rebuilt.params.steps == 4 and rebuilt.threads == 4 and rebuilt.rule == "dpo"
    assert rebuilt.config == original.config and rebuilt.scriptdir == "/repo/workflow/scripts"
    assert job_file(rebuilt).name == "variant~dpo.log.job.json"


def test_a_partly_named_part_keeps_its_unnamed_items_and_its_names():
    input_files = InputFiles(toclone=["a.parquet", "b.parquet", "c.json"])
    input_files._set_name("meta", 2)
    rebuilt = _round_trip(_snakemake(input_files), "dpo.py")
    assert list(rebuilt.input) == ["a.parquet", "b.parquet", "c.json"] and rebuilt.input.meta == "c.json"


def test_a_named_list_entry_survives_the_round_trip():
    input_files = InputFiles(toclone=["a.txt", "b.txt", "c.json"])
    input_files._set_name("texts", 0, 2)
    input_files._set_name("meta", 2)
    rebuilt = _round_trip(_snakemake(input_files), "dpo.py")
    assert list(rebuilt.input.texts) == ["a.txt", "b.txt"] and rebuilt.input.meta == "c.json"


def test_outside_a_launch_this_is_rank_0_of_1(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (rank(), world_size(), in_launched_process()) == (0, 1, False)


def test_a_launched_process_reads_its_rank_from_torchruns_variables(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert (rank(), world_size(), in_launched_process()) == (3, 4, False)  # LOCAL_RANK too marks a launch
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert in_launched_process()


def test_main_runs_the_jobs_script_with_its_snakemake_object(tmp_path):
    script = tmp_path / "script.py"
    out = tmp_path / "seen.json"
    script.write_text(
        "import json\n"
        f"json.dump({{'rule': snakemake.rule, 'model': snakemake.output.model, 'threads': snakemake.threads, "
        f"'main': __name__}}, open({str(out)!r}, 'w'))\n"
    )
    job = tmp_path / "job.json"
    job.write_text(json.dumps(job_spec(_snakemake(), str(script))))
    assert main([str(job)]) == 0
    assert json.loads(out.read_text()) == {
        "rule": "dpo",
        "model": "results/s/variant~dpo/model",
        "threads": 4,
        "main": "__main__",
    }


def test_main_wants_exactly_one_job_file(capsys):
    assert main([]) == 2
    assert "usage: python -m dpolab.launch <job.json>" in capsys.readouterr().err
