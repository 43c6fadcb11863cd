"""The study a config describes (dpolab.study): its grid points, policies and their paths."""

import pytest

from dpolab.config import load_study
from dpolab.study import parse_policy
from helpers.examples import SMOKE, smoke_with


def test_checkpoint_policies_are_the_checkpointed_grid_points_at_each_step():
    config = smoke_with(checkpoints=[1])
    config["dpo"]["max_steps"] = 3
    config["variants"]["mine"] = {"rule": "mine"}  # a user's rule file saves no checkpoints
    config["grid"]["variants"] = ["dpo", "kto", "orpo", "mine"]
    study = load_study(config, check_environment=False)
    assert study.checkpoint_policies == [f"variant~{v}/beta~0.1/seed~0/step~1" for v in ("dpo", "kto", "orpo")]
    assert study.evaluated_policies == study.policies + study.checkpoint_policies
    parts = parse_policy("variant~dpo/beta~0.1/seed~0/step~1")
    assert parts == {"variant": "dpo", "beta": "0.1", "seed": "0", "step": "1"}
    assert study.point(**parts) == study.point("dpo", 0.1, 0)
    with pytest.raises(KeyError, match="step 2 is not in evaluation.checkpoints"):
        study.point("dpo", 0.1, 0, step=2)
    assert study.trained_steps("dpo") == 3
    assert load_study(SMOKE, check_environment=False).checkpoint_policies == []
