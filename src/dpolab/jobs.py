"""The thin layer between a Snakemake `script:` job and dpolab: log redirection, threads,
and the job's MLflow child run (named and tagged from the job's rule and wildcards)."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import mlflow

from dpolab import launch, tracking
from dpolab.config import load_study
from dpolab.study import Study, parse_policy, thaw

GRID_TAGS = ("variant", "beta", "seed", "temperature", "policy")


def redirect_output(log_path: str) -> None:
    """Send this process's stdout/stderr (file descriptors too: vLLM and torch write there)
    to the job's Snakemake log."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "a", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    sys.stdout = sys.stderr = handle
    logging.basicConfig(
        level=logging.INFO, stream=handle, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )


def set_threads(threads: int) -> None:
    threads = max(int(threads), 1)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = str(threads)
    import torch

    torch.set_num_threads(threads)


def grid_tags(wildcards) -> dict:
    """Tags from wildcards; a policy id `variant~v/beta~b/seed~s` is split into its parts."""
    tags = {k: v for k, v in dict(wildcards).items() if k in GRID_TAGS}
    policy = tags.get("policy")
    if policy == "sft":
        tags["variant"] = "sft"
    elif policy:
        tags.update(parse_policy(policy))
    return tags


def vllm_cache(snakemake) -> Path:
    """One vLLM cache per study (results/<study>/vllm-cache): vLLM caches what it learns about
    a model class there, so only the first engine of a study pays for inspecting it in a
    subprocess (~20 CPU-seconds per engine start on a small CPU)."""
    return Path(snakemake.input.study_run).parents[1] / "vllm-cache"


def temperatures_tag(study: Study) -> dict:
    """The `temperature` tag of a job that covers every configured temperature."""
    return {"temperature": ",".join(study.temperature_labels)}


# config id -> (the config, its Study): the config is kept so that its id is not reused by another
_STUDIES: dict[int, tuple[dict, Study]] = {}


def study_of(snakemake) -> Study:
    """The job's study, from the resolved config its workflow checked (machine checks were made
    there, so only the config's own checks run again: milliseconds)."""
    key = id(snakemake.config)
    if key not in _STUDIES or _STUDIES[key][0] is not snakemake.config:
        _STUDIES[key] = (snakemake.config, load_study(snakemake.config, check_environment=False))
    return _STUDIES[key][1]


def setup(snakemake) -> None:
    """The job's log and threads (a job of several training processes: each its share)."""
    redirect_output(snakemake.log[0])
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage reporting
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if launch.in_launched_process() else 1
    set_threads(max(1, snakemake.threads // local_processes))


@contextmanager
def job(
    snakemake,
    stage: str,
    params: dict | None = None,
    tags: dict | None = None,
    *,
    wildcards: dict | None = None,
    run_rule: str | None = None,
    set_up: bool = True,
):
    """Set up a job and open its MLflow child run; yields the run. `tags` adds to the
    wildcard tags (e.g. the temperatures a generate job covers). In a job of several training
    processes (dpolab.launch) only rank 0 opens the run: the job is logged once; the other
    ranks yield None. A job that serves several grid points (one vLLM engine for many LoRA
    policies) opens one run per point, named as the one-point job's would be: `wildcards` and
    `run_rule` give the point and that job's rule; `set_up=False` after the first."""
    if set_up:
        setup(snakemake)
    if launch.rank() != 0:
        logging.getLogger("dpolab").info("job %s: rank %d of %d", snakemake.rule, launch.rank(), launch.world_size())
        yield None
        return
    wildcards = dict(snakemake.wildcards) if wildcards is None else wildcards
    rule = run_rule or snakemake.rule
    tags = {**grid_tags(wildcards), **(tags or {})}
    suffix = "/".join(f"{k}~{v}" for k, v in wildcards.items()) or ""
    name = f"{rule}/{suffix}" if suffix else rule
    tags.update(log_file=snakemake.log[0], benchmark_file=tracking.benchmark_file(snakemake.log[0]))
    study_run_file = snakemake.input.get("study_run") or snakemake.input[0]
    logging.getLogger("dpolab").info("job %s (threads=%s)", name, snakemake.threads)
    job_params = {
        **(params or {}),
        "job": {"rule": snakemake.rule, "threads": snakemake.threads},
        **({"wildcards": wildcards} if wildcards else {}),
    }
    with tracking.job_run(
        study_run_file, rule=rule, stage=stage, name=name, tags=tags, params=job_params, config=snakemake.config
    ) as run:
        mlflow.log_dict(job_record(snakemake), "job.json")
        yield run


def launched_elsewhere(snakemake) -> bool:
    """For a training job of a study with several processes per job (distributed:): in the
    Snakemake job's own process, run the job's script under `accelerate launch` and return True
    (the processes did the work); in a launched process, or with one process, return False."""
    study = study_of(snakemake)
    if not study.distributed.launched or launch.in_launched_process():
        return False
    redirect_output(snakemake.log[0])
    script = getattr(sys.modules["__main__"], "__file__", None)  # Snakemake sets it to the rule's script
    if not script or not Path(script).is_file():
        raise RuntimeError(
            f"rule {snakemake.rule}: distributed training runs a rule's script: file; a run: block "
            "cannot be launched in several processes"
        )
    launch.run_launched(snakemake, script, study.distributed, study.training)
    return True


def training_settings(study: Study, *, with_peft: bool = True) -> dict:
    """The keyword arguments of every dpolab.train function that say how to train."""
    return {"training": study.training, **({"peft": study.peft} if with_peft else {})}


def _training_job(snakemake, stage: str, params: dict, train, *, model_dir: Path, logged, tags=None, **logs) -> dict:
    """A training job: its run (`stage`, `params`, `tags`), `train()`, then on rank 0 what
    `logged(result)` picks, the model folder and `logs` (files=, folders=: tracking.log_training_result).
    With several processes per job, see launched_elsewhere (the job's own process returns {})."""
    if launched_elsewhere(snakemake):
        return {}
    with job(snakemake, stage, params=params) as run:
        if run is not None and tags:  # rank 0
            mlflow.set_tags(tags)
        result = train()
        if run is not None:
            tracking.log_training_result(logged(result), model_dir, snakemake.config, **logs)
    return result


def _final_loss(result: dict) -> dict:
    return {"final_train_loss": result["train_loss"]}


def train_policy(snakemake, train, *, params: dict, tags: dict, **arguments) -> dict:
    """A training job on the output contract (the dpo rule and the rule variants): its run
    (stage dpo, with `tags`), `train(**arguments, out_dir=, use_cpu=, mlflow_active=True,
    training=, peft=)` writing model/ (a LoRA adapter with peft:) and train_log.json, then the
    final loss and the model folder logged."""
    study = study_of(snakemake)
    settings = {
        "training": study.section("training"),
        "peft": study.section("peft"),
        "distributed": study.section("distributed"),
    }
    model_dir = Path(snakemake.output.model)
    steps = study.checkpoint_steps(snakemake.wildcards.variant)  # the rule's outputs declare them
    return _training_job(
        snakemake,
        "dpo",
        {**params, **settings},
        lambda: train(
            **arguments,
            out_dir=model_dir.parent,
            use_cpu=study.device == "cpu",
            mlflow_active=True,
            **training_settings(study),
            **({"checkpoints": steps} if steps else {}),
        ),
        model_dir=model_dir,
        logged=_final_loss,
        tags={**tags, "policy_format": "lora_adapter" if study.peft else "full"},
    )


def train_sft(snakemake, *, base_dir: Path, texts: Path, model_dir: Path) -> dict:
    """The sft rule: dpolab.train.run_sft on the base model and the SFT texts into model_dir's
    folder, then the final loss, the adapter (peft.sft: lora, MBs beside the merged model) and
    the model folder logged."""
    from dpolab.train import run_sft  # torch and TRL: only the training jobs import them

    study = study_of(snakemake)
    params = {"sft": study.section("sft"), "training": study.section("training"), "peft": study.section("peft")}
    return _training_job(
        snakemake,
        "sft",
        params,
        lambda: run_sft(
            base_dir,
            texts,
            study.sft,
            model_dir.parent,
            use_cpu=study.device == "cpu",
            mlflow_active=True,
            **training_settings(study),
        ),
        model_dir=model_dir,
        logged=_final_loss,
        folders={"adapter": model_dir.parent / "adapter"},
    )


def train_reward(
    snakemake, *, base_dir: Path, train_pairs: Path, eval_pairs: Path, model_dir: Path, accuracy_file: Path
) -> dict:
    """The reward_model rule: dpolab.reward.train_reward_model on the base model and the reward
    splits into model_dir's folder, then its metrics, accuracy_file and the model folder logged."""
    import pandas as pd

    from dpolab.reward import train_reward_model

    study = study_of(snakemake)
    params = {"reward_model": study.section("reward_model"), "training": study.section("training")}
    return _training_job(
        snakemake,
        "reward_model",
        params,
        lambda: train_reward_model(
            base_dir,
            pd.read_parquet(train_pairs),
            pd.read_parquet(eval_pairs),
            study.reward_model,
            model_dir.parent,
            use_cpu=study.device == "cpu",
            mlflow_active=True,
            **training_settings(study, with_peft=False),
        ),
        model_dir=model_dir,
        logged=lambda metrics: metrics,
        files=[accuracy_file],
    )


def train_rule_variant(snakemake, train, *, settings: tuple[str, ...] = (), **data) -> dict:
    """A rule variant's training job (kto, orpo, a user's rule file with a `script:`): the grid
    point from the wildcards, the dpo: section with the variant's `train:` overrides, the
    starting model (`input.start`), and the variant's own `settings` (names of its config keys)
    passed to `train` with `data` (the rule's inputs, read)."""
    wildcards, study = snakemake.wildcards, study_of(snakemake)
    point = study.point(wildcards.variant, wildcards.beta, wildcards.seed)
    section = study.train_section(point.variant)
    return train_policy(
        snakemake,
        train,
        params={"dpo": section, "loss": {"name": point.loss, "beta": point.beta, **thaw(point.loss_params)}},
        tags={"loss": point.loss, "starts_from": point.starts_from},
        start_dir=Path(snakemake.input.start),
        cfg=study.train_settings(point.variant),
        beta=point.beta,
        seed=point.seed,
        **{name: thaw(point.loss_params[name]) for name in settings},
        **data,
    )


def from_run_block(rule, input, output, params, wildcards, threads, resources, log, config):
    """The `snakemake` object a `script:` job gets, for a rule's `run:` block (whose parts
    Snakemake passes as these names), so `job()` serves both: a rule file can carry its whole
    variant in one file. Snakemake runs a local `run:` job in its own process, as a script."""
    from snakemake.iocontainers import Snakemake

    return Snakemake(input, output, params, wildcards, threads, resources, log, config, rule, None)


def job_record(snakemake) -> dict:
    """Everything Snakemake resolved for this job: rule, wildcards, files, threads,
    resources, params and the full validated config (with schema defaults filled in)."""
    resources = {k: v for k, v in snakemake.resources.items() if not k.startswith("_")}
    return {
        "rule": snakemake.rule,
        "wildcards": dict(snakemake.wildcards),
        "input": [str(f) for f in snakemake.input],
        "output": [str(f) for f in snakemake.output],
        "log": [str(f) for f in snakemake.log],
        "threads": snakemake.threads,
        "resources": {k: v if isinstance(v, (int, float, str)) else str(v) for k, v in resources.items()},
        "params": {k: v for k, v in snakemake.params.items()},
        "config": snakemake.config,
    }
