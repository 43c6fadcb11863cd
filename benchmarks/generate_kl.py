"""A generate job's sampling and KL, the previous way against today's, side by side in one process.

On one policy of a finished study (its test prompts, every temperature, the study's seeds):
  sampling  baseline: one vLLM `generate` call per temperature (as before);
            dpolab:   every temperature in one call (`VLLMSampler.sample_temperatures`);
  KL        baseline: what the evaluate job did: load the policy and the SFT model in transformers
                      and run both over every sample (`dpolab.models.completion_logps`);
            dpolab:   the policy's log-probs come with the samples from vLLM; the SFT weights are
                      reloaded into the same engine in place and score the same tokens.
Prints each side's seconds, the ratios, whether the two samplings drew the same tokens, and the
largest differences of the per-sample log-probs and of the KL per temperature.

    python benchmarks/generate_kl.py --run results/default --policy variant~dpo/beta~0.1/seed~0
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dpolab.generate import make_sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("results/default"))
    parser.add_argument("--policy", default="variant~dpo/beta~0.1/seed~0")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    prompts = pd.read_parquet(args.run / "data" / "prompts_test.parquet")
    requests = list(zip(prompts["prompt_id"].tolist(), prompts["prompt"]))
    policy_dir, sft_dir = args.run / "dpo" / args.policy / "model", args.run / "sft" / "model"
    sampler = make_sampler(
        "vllm", policy_dir, max_model_len=args.max_new_tokens + 64, seed=args.seed, cache_dir=args.run / "vllm-cache"
    )
    kwargs = dict(n=1, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed)

    start = time.perf_counter()
    separate = {t: [row[0] for row in sampler.sample(requests, temperature=t, **kwargs)] for t in args.temperatures}
    sampling_baseline = time.perf_counter() - start
    sampler.llm.reset_prefix_cache()  # the second way starts as cold as the first
    start = time.perf_counter()
    together = {
        t: [row[0] for row in rows]
        for t, rows in sampler.sample_temperatures(requests, args.temperatures, **kwargs).items()
    }
    sampling_dpolab = time.perf_counter() - start
    same_tokens = sum(
        a.completion_token_ids == b.completion_token_ids
        for t in args.temperatures
        for a, b in zip(separate[t], together[t])
    )
    samples = [s for t in args.temperatures for s in together[t]]
    prompt_ids, completion_ids = [s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples]

    start = time.perf_counter()
    policy_engine = np.array([s.logp for s in samples])
    sampler.load_weights(sft_dir)
    reference_engine = sampler.score(prompt_ids, completion_ids)
    kl_dpolab = time.perf_counter() - start

    from dpolab.models import completion_logps, load_policy

    start = time.perf_counter()
    reference_model, _ = load_policy(sft_dir)
    policy_model, _ = load_policy(policy_dir)
    reference_hf = completion_logps(reference_model, prompt_ids, completion_ids)
    policy_hf = completion_logps(policy_model, prompt_ids, completion_ids)
    kl_baseline = time.perf_counter() - start

    n = len(requests)
    kl_gap = max(
        abs(
            np.mean(policy_engine[k * n : (k + 1) * n] - reference_engine[k * n : (k + 1) * n])
            - np.mean(policy_hf[k * n : (k + 1) * n] - reference_hf[k * n : (k + 1) * n])
        )
        for k in range(len(args.temperatures))
    )
    print(
        f"sampling  baseline (a call per temperature) {sampling_baseline:6.1f} s   "
        f"dpolab (one call) {sampling_dpolab:6.1f} s"
        f"   ratio {sampling_dpolab / sampling_baseline:.2f}   identical completions {same_tokens}/{len(samples)}"
    )
    print(
        f"KL        baseline (transformers, both models) {kl_baseline:6.1f} s   dpolab (same engine) {kl_dpolab:6.1f} s"
        f"   ratio {kl_dpolab / kl_baseline:.2f}"
    )
    print(
        f"largest per-sample difference: policy {np.abs(policy_engine - policy_hf).max():.2e}, "
        f"reference {np.abs(reference_engine - reference_hf).max():.2e} nats; KL per temperature {kl_gap:.2e}"
    )


if __name__ == "__main__":
    main()
