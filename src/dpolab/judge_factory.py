"""The judge a config entry `judges.<name>` describes: one place that knows every kind (the local
judges of dpolab.judges and the HTTP judge of dpolab.http_judge, which builds on them)."""

from __future__ import annotations

from dpolab.http_judge import HTTPPairwiseJudge
from dpolab.judges import GoldJudge, Judge, LLMPairwiseJudge, RewardModelJudge, VaderJudge


def make_judge(
    name: str,
    spec: dict,
    *,
    gold_dir=None,
    base_model_dir=None,
    reward_model_dir=None,
    reward_model_max_length: int | None = None,
    default_template: str | None = None,
    verdict_cache=None,
    device: str = "cpu",
    cache_dir=None,
) -> Judge:
    """The judge a config entry `judges.<name>` describes (see the schema). `reward_model_dir`: the
    reward model trained in the study (source: study), scored at the length it was trained and
    measured at (`reward_model_max_length`); `default_template`: the pairwise question when the
    config gives none; `verdict_cache`: where an HTTP judge keeps its verdicts."""
    kind = spec["kind"]
    template = spec.get("template") or default_template
    if kind == "gold":
        judge = GoldJudge.load(gold_dir)
    elif kind == "vader":
        judge = VaderJudge()
    elif kind == "reward_model":
        if spec.get("source") == "study":
            if reward_model_dir is None:
                raise ValueError(f"judges.{name}: the reward model trained in the study was not given to this job")
            path, max_length = str(reward_model_dir), reward_model_max_length or spec["max_length"]
        else:
            path, max_length = spec["path"], spec["max_length"]
        judge = RewardModelJudge(
            name,
            path,
            revision=spec.get("revision"),
            trust_remote_code=spec["trust_remote_code"],
            label=spec.get("label"),
            chat_template=spec["chat_template"],
            batch_size=spec["batch_size"],
            max_length=max_length,
        )
    elif kind == "llm_http":
        judge = HTTPPairwiseJudge(
            name,
            base_url=spec["base_url"],
            model=spec["model"],
            api_key_env=spec.get("api_key_env"),
            template=template,
            system_prompt=spec.get("system_prompt"),
            labels=spec.get("labels"),
            max_concurrency=spec["max_concurrency"],
            max_retries=spec["max_retries"],
            timeout=spec["timeout"],
            cache_path=verdict_cache,
        )
    elif kind == "llm_pairwise":
        model_dir = base_model_dir if spec["source"] == "base" else spec["path"]
        judge = LLMPairwiseJudge(
            name,
            model_dir,
            template=template,
            labels=spec.get("labels"),
            chat_template=spec["chat_template"],
            max_model_len=spec["max_length"],
            seed=spec["seed"],
            device=device,
            cache_dir=cache_dir,
            revision=spec.get("revision"),
            trust_remote_code=spec["trust_remote_code"],
        )
    else:
        raise ValueError(f"judges.{name}.kind: unknown judge kind {kind!r}")
    judge.name = name
    return judge


def prompts_for(spec, prompts: list[str], instructions: list[str] | None) -> list[str]:
    """What a pointwise judge reads as the prompt: the prompt as the policy read it (with the policy's
    chat template in a conversational study), or, for a judge that wraps its input in its own chat
    template (`chat_template: true`, e.g. a Hub reward model), the instruction as a person wrote it."""
    return instructions if spec.get("chat_template") and instructions is not None else prompts
