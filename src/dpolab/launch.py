"""Several training processes for one Snakemake job, through Accelerate.

A training rule runs its `script:` in the job's own process. When the study asks for several
processes (`distributed.strategy` other than none), that process does not train: it writes the
job (files, wildcards, threads, resources, config) to `<log>.job.json` and starts
`accelerate launch ... -m dpolab.launch <job.json>`, which runs the same script in every
process with the same `snakemake` object, rebuilt from the JSON. Rank 0 opens the job's MLflow
run and writes the outputs; the other ranks train and log nothing (dpolab.jobs).

Why `accelerate launch --multi_gpu` on the CPU too: Accelerate's `--cpu` flag starts a single
process unless MPI is installed; its multi-GPU launcher (torchrun underneath) starts the
processes, and the trainer's `use_cpu=True` makes Accelerate join them over gloo. On several
nodes, `srun` starts one launcher per node (SLURM gives each its node id), the first node of
the allocation being the rendezvous host.
"""

from __future__ import annotations

import json
import os
import runpy
import shlex
import sys
from pathlib import Path

from dpolab.settings import DistributedSettings, TrainingSettings

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "envs" / "accelerate"
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
RENDEZVOUS_PORT = 29500
HEAD_NODE = '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'


def accelerate_config(strategy: str) -> Path:
    """The shipped Accelerate config of a strategy (envs/accelerate/<strategy>.yaml)."""
    return ACCELERATE_CONFIGS / f"{strategy}.yaml"


def in_launched_process() -> bool:
    """Whether this process is one of the processes `accelerate launch` started (torchrun sets these)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    """This process's global rank (0 outside a launch)."""
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def launch_command(
    distributed: DistributedSettings, training: TrainingSettings, job_file: str, *, relative_to: Path | None = None
) -> str:
    """The shell command that runs one training job in `distributed.processes` processes."""
    config = accelerate_config(distributed.strategy)
    if relative_to is not None and config.is_relative_to(
        relative_to
    ):  # dry runs: as the user sees it in the repository
        config = config.relative_to(relative_to)
    accelerate = [
        "accelerate",
        "launch",
        "--config_file",
        str(config),
        "--num_processes",
        str(distributed.processes),
        "--num_machines",
        str(distributed.nodes),
        "--mixed_precision",
        MIXED_PRECISION[training.precision],
        "--dynamo_backend",
        "no",
    ]
    tail = ["-m", "dpolab.launch", job_file]
    if distributed.nodes == 1:
        return shlex.join(accelerate + tail)  # Accelerate picks a free port when its default one is taken
    # One launcher per node; $SLURM_NODEID and the head node are read on each node, hence the single quotes.
    per_node = (
        shlex.join(accelerate) + ' --machine_rank "$SLURM_NODEID"' + f" --main_process_ip {HEAD_NODE}"
        f" --main_process_port {RENDEZVOUS_PORT} --rdzv_backend static " + shlex.join(tail)
    )
    return f"srun --nodes {distributed.nodes} --ntasks-per-node 1 bash -c {shlex.quote(per_node)}"


# ---- the job as JSON: what a launched process needs to rebuild the `snakemake` object ---------------
NAMED_PARTS = ("input", "output", "params", "wildcards", "log", "resources")


def _named(part) -> dict:
    """A Snakemake Namedlist as {"names": {name: value}, "items": [...]}, values as JSON."""
    names = {name: value for name, value in part.items()}
    return {
        "names": json.loads(json.dumps(names, default=str)),
        "items": json.loads(json.dumps(list(part), default=str)),
    }


def job_spec(snakemake, script: str) -> dict:
    return {
        "script": str(Path(script).resolve()),
        "rule": snakemake.rule,
        "threads": snakemake.threads,
        "config": json.loads(json.dumps(snakemake.config, default=str)),
        "scriptdir": getattr(snakemake, "scriptdir", None),
        **{part: _named(getattr(snakemake, part)) for part in NAMED_PARTS},
    }


def _start_of(items: list, value: list) -> int:
    for start in range(len(items) - len(value) + 1):
        if items[start : start + len(value)] == value:
            return start
    raise ValueError(f"{value!r} is not a run of the job's items")


def _namedlist(cls, part: dict):
    names, items = part["names"], part["items"]
    if len(names) == len(items) and not any(isinstance(v, list) for v in names.values()):
        return cls(fromdict=names)  # every entry one named item (the training rules name all theirs)
    rebuilt = cls(toclone=items)
    for name, value in names.items():
        if isinstance(value, list):  # a named entry of several items: `texts=[a, b]`
            start = _start_of(items, value)
            rebuilt._set_name(name, start, start + len(value))
        else:
            rebuilt._set_name(name, items.index(value))
    return rebuilt


def rebuild_snakemake(spec: dict):
    """The `snakemake` object of the job, as Snakemake hands it to a `script:`."""
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

    return Snakemake(
        _namedlist(InputFiles, spec["input"]),
        _namedlist(OutputFiles, spec["output"]),
        _namedlist(Params, spec["params"]),
        _namedlist(Wildcards, spec["wildcards"]),
        spec["threads"],
        _namedlist(ResourceList, spec["resources"]),
        _namedlist(Log, spec["log"]),
        spec["config"],
        spec["rule"],
        None,
        scriptdir=spec["scriptdir"],
    )


def job_file(snakemake) -> Path:
    return Path(f"{snakemake.log[0]}.job.json")


def run_launched(snakemake, script: str, distributed: DistributedSettings, training: TrainingSettings) -> None:
    """In the Snakemake job's process: write the job and run it in every process (the output goes
    to the job's log); raise if any process fails."""
    import importlib.util
    import subprocess

    from dpolab.config import ROOT

    if distributed.strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError(
            f"distributed.strategy: {distributed.strategy} needs the deepspeed package (pip install -r "
            "envs/gpu.txt on the GPU nodes)"
        )
    path = job_file(snakemake)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job_spec(snakemake, script), indent=1))
    command = launch_command(distributed, training, str(path))
    print(f"launching {distributed.processes} training processes: {command}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    env.pop("LOCAL_RANK", None)
    completed = subprocess.run(command, shell=True, executable="/bin/bash", env=env)
    if completed.returncode:
        raise RuntimeError(
            f"{snakemake.rule}: the {distributed.processes} training processes failed (exit code "
            f"{completed.returncode}); each process's error is above in {snakemake.log[0]}"
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m dpolab.launch <job.json>`: run the job's script in this (launched) process."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m dpolab.launch <job.json> (started by accelerate launch)", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    runpy.run_path(spec["script"], init_globals={"snakemake": rebuild_snakemake(spec)}, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
