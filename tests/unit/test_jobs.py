"""dpolab.jobs: the layer between a Snakemake `script:` job and dpolab. Pinned: redirect_output
sends print, raw file-descriptor writes and logging to the job's log (appending; its folder made);
set_threads and setup give torch and OpenMP the job's threads (a launched process its share);
grid_tags splits a policy id and keeps only grid wildcards; temperatures_tag, training_settings,
vllm_cache and study_of (checked once per config) read the study; job_record is the JSON record of
what Snakemake resolved; a rank other than 0 opens no run; launched_elsewhere does nothing with one
process or inside a launched one and refuses a `run:` block. The `snakemake` objects are
types.SimpleNamespace stand-ins (and one real one from from_run_block); stdout/stderr, the file
descriptors and the root logger are restored after each redirection."""

import copy
import json
import logging
import os
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Wildcards

from dpolab.config import ROOT, load_study
from dpolab.jobs import (
    from_run_block,
    grid_tags,
    job,
    job_record,
    launched_elsewhere,
    redirect_output,
    study_of,
    temperatures_tag,
    training_settings,
    vllm_cache,
)

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
DDP = {**copy.deepcopy(SMOKE), "distributed": {"strategy": "ddp", "gpus_per_job": 2}}


@contextmanager
def restored_output():
    """Undo redirect_output: file descriptors 1 and 2, sys.stdout/stderr and the root logger."""
    sys.stdout.flush()
    sys.stderr.flush()
    fds, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        handle = sys.stdout
        handle.flush()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        sys.stdout, sys.stderr = streams
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        if handle is not streams[0]:
            handle.close()


@pytest.fixture
def no_launch(monkeypatch):
    """A process that `accelerate launch` did not start."""
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def _snakemake(tmp_path, config=None, **changes):
    """What a dpo job's script gets, as far as dpolab.jobs reads it."""
    fields = dict(
        rule="dpo",
        input=types.SimpleNamespace(study_run=str(tmp_path / "results/smoke/mlflow/study_run.json")),
        output=["results/smoke/variant~dpo/model"],
        log=[str(tmp_path / "results/smoke/logs/dpo/variant~dpo.log")],
        wildcards={"variant": "dpo", "beta": "0.1", "seed": "0"},
        threads=4,
        config=SMOKE if config is None else config,
    )
    return types.SimpleNamespace(**{**fields, **changes})


def test_redirect_output_sends_prints_fd_writes_and_logging_to_the_log(tmp_path):
    log = tmp_path / "job.log"
    with restored_output():
        redirect_output(str(log))
        print("printed")
        os.write(1, b"fd 1\n")
        os.write(2, b"fd 2\n")
        print("to stderr", file=sys.stderr)
        logging.getLogger("dpolab").info("logged %d", 7)
        sys.stdout.flush()
    text = log.read_text()
    for line in ("printed", "fd 1", "fd 2", "to stderr"):
        assert line + "\n" in text
    assert "dpolab INFO logged 7" in text


def test_redirect_output_appends_and_makes_the_folder(tmp_path):
    log = tmp_path / "new" / "folder" / "job.log"
    with restored_output():
        redirect_output(str(log))
        print("first")
    with restored_output():
        redirect_output(str(log))
        print("second")
    assert log.read_text() == "first\nsecond\n"


# Threads are set in a fresh process, as a job's script runs: in the test process an inference
# engine started by an earlier test may already hold OpenMP at one thread.
THREADS_PROBE = """
import json, os, sys, types
import torch
from dpolab.jobs import set_threads, setup
job = json.loads(sys.argv[1])
if job["setup"]:
    setup(types.SimpleNamespace(log=[job["log"]], threads=job["threads"]))
else:
    set_threads(job["threads"])
seen = {"torch": torch.get_num_threads(), "omp": os.environ["OMP_NUM_THREADS"],
        "mkl": os.environ["MKL_NUM_THREADS"], "telemetry": os.environ.get("MLFLOW_DISABLE_TELEMETRY")}
open(job["result"], "w").write(json.dumps(seen))  # stdout may be the job's log by now
"""


def threads_in_a_job(threads: int, tmp_path: Path, *, log: Path | None = None, **env) -> dict:
    """set_threads(threads), or setup() of a job with `threads` when `log` is given, in a fresh
    process with OMP_NUM_THREADS=1 and `env`; what torch and the environment then say."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE")
    }
    environment.pop("MLFLOW_DISABLE_TELEMETRY", None)
    job = {"threads": threads, "setup": log is not None, "log": str(log), "result": str(tmp_path / "threads.json")}
    done = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE, json.dumps(job)],
        env={**environment, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "threads.json").read_text())


def test_set_threads_sets_torch_and_openmp(tmp_path):
    assert threads_in_a_job(2, tmp_path) == {"torch": 2, "omp": "2", "mkl": "2", "telemetry": None}
    assert threads_in_a_job(0, tmp_path)["torch"] == 1  # at least one


def test_setup_gives_each_launched_process_its_share_of_the_threads(tmp_path):
    log = tmp_path / "logs" / "dpo" / "variant~dpo.log"
    seen = threads_in_a_job(4, tmp_path, log=log, LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    assert seen == {"torch": 2, "omp": "2", "mkl": "2", "telemetry": "true"}
    assert log.is_file()  # the job's output goes to its log


def test_setup_outside_a_launch_uses_every_thread_of_the_job(tmp_path):
    # LOCAL_WORLD_SIZE alone is ignored: not a launched process
    assert threads_in_a_job(2, tmp_path, log=tmp_path / "job.log", LOCAL_WORLD_SIZE="2")["torch"] == 2


def test_grid_tags_keep_grid_wildcards_and_split_a_policy():
    assert grid_tags({"variant": "dpo", "beta": "0.1", "seed": "0", "judge": "gold"}) == {
        "variant": "dpo",
        "beta": "0.1",
        "seed": "0",
    }
    assert grid_tags({"policy": "variant~ipo/beta~0.5/seed~2", "temperature": "0.7"}) == {
        "policy": "variant~ipo/beta~0.5/seed~2",
        "variant": "ipo",
        "beta": "0.5",
        "seed": "2",
        "temperature": "0.7",
    }
    assert grid_tags({"policy": "sft"}) == {"policy": "sft", "variant": "sft"}
    assert grid_tags({}) == {}


def test_grid_tags_read_snakemakes_wildcards_object():
    wildcards = Wildcards(fromdict={"policy": "variant~dpo/beta~0.1/seed~0/step~2", "judge": "vader"})
    assert grid_tags(wildcards) == {
        "policy": "variant~dpo/beta~0.1/seed~0/step~2",
        "variant": "dpo",
        "beta": "0.1",
        "seed": "0",
        "step": "2",
    }


def test_temperatures_tag_lists_every_configured_temperature_as_paths_write_it():
    study = load_study(copy.deepcopy(SMOKE), check_environment=False)
    assert temperatures_tag(study) == {"temperature": "0,1"}
    config = copy.deepcopy(SMOKE)
    config["generation"]["temperatures"] = [0.7, 1.0, 0.25]
    assert temperatures_tag(load_study(config, check_environment=False)) == {"temperature": "0.7,1,0.25"}


def test_training_settings_are_the_studys_training_and_peft():
    config = copy.deepcopy(SMOKE)
    config["peft"] = {"r": 4}
    study = load_study(config, check_environment=False)
    settings = training_settings(study)
    assert settings == {"training": study.training, "peft": study.peft} and settings["peft"].r == 4
    assert training_settings(study, with_peft=False) == {"training": study.training}
    full = load_study(copy.deepcopy(SMOKE), check_environment=False)
    assert training_settings(full)["peft"] is None


def test_the_vllm_cache_is_one_per_study(tmp_path):
    assert vllm_cache(_snakemake(tmp_path)) == tmp_path / "results" / "smoke" / "vllm-cache"


def test_study_of_checks_a_config_once(tmp_path):
    study = study_of(_snakemake(tmp_path))
    assert study.name == "smoke" and study.distributed.strategy == "none"
    assert study_of(_snakemake(tmp_path)) is study  # the same config object: not checked again
    assert study_of(_snakemake(tmp_path, config=DDP)).distributed.processes == 2


def test_a_new_config_at_a_freed_configs_id_gets_its_own_study(tmp_path, monkeypatch):
    from dpolab import jobs

    stale = load_study(SMOKE, check_environment=False)
    config = copy.deepcopy(DDP)
    # as if a freed config had lived at this id: the cache holds another config's study there
    monkeypatch.setitem(jobs._STUDIES, id(config), (copy.deepcopy(SMOKE), stale))
    study = study_of(_snakemake(tmp_path, config=config))
    assert study is not stale and study.distributed.processes == 2


def test_job_record_is_what_snakemake_resolved_as_json(tmp_path):
    snakemake = _snakemake(
        tmp_path,
        input=["results/smoke/sft/model", "results/smoke/pairs/pairs.parquet"],
        resources={
            "_cores": 4,
            "_nodes": 1,
            "mem_mb": 3254,
            "runtime": 15.5,
            "tmpdir": "/tmp",
            "slurm_extra": ["--qos", "high"],
        },
        params={"steps": 2, "names": ["a", "b"]},
    )
    record = job_record(snakemake)
    assert json.loads(json.dumps(record)) == record
    assert record["rule"] == "dpo" and record["threads"] == 4
    assert record["wildcards"] == {"variant": "dpo", "beta": "0.1", "seed": "0"}
    assert record["input"] == ["results/smoke/sft/model", "results/smoke/pairs/pairs.parquet"]
    assert record["output"] == ["results/smoke/variant~dpo/model"] and record["log"] == snakemake.log
    assert record["resources"] == {
        "mem_mb": 3254,
        "runtime": 15.5,
        "tmpdir": "/tmp",
        "slurm_extra": "['--qos', 'high']",
    }  # no internals; others as text
    assert record["params"] == {"steps": 2, "names": ["a", "b"]} and record["config"] == snakemake.config


def test_a_run_block_gets_the_object_a_script_gets():
    snakemake = from_run_block(
        "kto",
        InputFiles(fromdict={"study_run": "s.json"}),
        OutputFiles(fromdict={"model": "m"}),
        Params(fromdict={"k": 1}),
        Wildcards(fromdict={"variant": "kto"}),
        2,
        ResourceList(fromdict={"_cores": 2, "mem_mb": 10}),
        Log(toclone=["logs/kto.log"]),
        {"study": "x"},
    )
    assert snakemake.rule == "kto" and snakemake.input.study_run == "s.json" and snakemake.log[0] == "logs/kto.log"
    record = job_record(snakemake)
    assert record["input"] == ["s.json"] and record["wildcards"] == {"variant": "kto"}
    assert record["resources"] == {"mem_mb": 10} and record["params"] == {"k": 1}


def test_a_rank_other_than_0_opens_no_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    snakemake = _snakemake(tmp_path, input={})  # no study_run file: rank 1 never reads it
    with caplog.at_level(logging.INFO, logger="dpolab"), job(snakemake, "dpo", set_up=False) as run:
        assert run is None
    assert "job dpo: rank 1 of 2" in caplog.text


def test_one_process_is_not_launched_elsewhere(tmp_path, no_launch):
    snakemake = _snakemake(tmp_path)
    assert launched_elsewhere(snakemake) is False
    assert not (tmp_path / "results").exists()  # the log was not touched


def test_a_launched_process_trains_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_elsewhere(_snakemake(tmp_path, config=DDP)) is False


def test_a_run_block_cannot_be_launched_in_several_processes(tmp_path, monkeypatch, no_launch):
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))  # a run: block has no script file
    snakemake = _snakemake(tmp_path, config=DDP)
    with restored_output(), pytest.raises(RuntimeError, match=r"^rule dpo: distributed training runs a rule's script"):
        launched_elsewhere(snakemake)
    assert (tmp_path / "results/smoke/logs/dpo/variant~dpo.log").is_file()  # the job's output went to its log
