"""Preference pairs from SFT samples (dpolab.pairs): the best and worst completion of each
prompt under the gold judge, and a known fraction relabelled for length."""

import numpy as np
import pandas as pd
import pytest

from dpolab.pairs import build_pairs, inject_length_bias


class _S:
    def __init__(self, text, n):
        self.completion, self.completion_token_ids = text, list(range(n))


def test_pairs_take_best_and_worst_and_length_bias_relabels_a_known_fraction():
    prompts = pd.DataFrame({"prompt_id": [0, 1, 2, 3], "prompt": ["a", "b", "c", "d"]})
    samples = [[_S("long", 9), _S("short", 2), _S("mid", 5)] for _ in range(4)]
    # the short completion scores best everywhere, the long one worst
    scores = [np.array([0.1, 0.9, 0.5])] * 4
    pairs = build_pairs(prompts, samples, scores, min_score_margin=0.0, length_bias=0.0, seed=0)
    assert (pairs["chosen"] == "short").all() and (pairs["rejected"] == "long").all()
    biased = inject_length_bias(pairs, 0.5, seed=0)
    assert biased["relabelled_for_length"].sum() == 2
    flipped = biased[biased["relabelled_for_length"]]
    assert (
        (flipped["chosen"] == "long").all()
        and (flipped["chosen_tokens"] == 9).all()
        and (flipped["chosen_score"] == 0.1).all()
    )
    with pytest.raises(ValueError, match="no preference pairs"):
        build_pairs(prompts, samples, scores, min_score_margin=0.9, length_bias=0.0, seed=0)
