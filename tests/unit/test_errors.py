"""dpolab.errors: ConfigError is a ValueError (callers that catch ValueError, e.g. around a
settings dataclass's checks, also catch it), and a config check that fails on a study config
file raises it with the offending key's dotted path first in the message, before any job runs."""

import pytest
import yaml

from dpolab.config import ROOT, read_study
from dpolab.errors import ConfigError

SMOKE = ROOT / "configs" / "smoke.yaml"


def _broken_smoke(tmp_path, section: str, **changes):
    """configs/smoke.yaml with `changes` written into `section`, saved in tmp_path."""
    config = yaml.safe_load(SMOKE.read_text())
    config[section] = {**config.get(section, {}), **changes}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_error_is_a_value_error_with_its_message():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError, match=r"^grid\.seeds: bad$"):
        raise ConfigError("grid.seeds: bad")


def test_a_broken_study_file_raises_config_error_naming_the_dotted_key_first(tmp_path):
    # a head size hidden_size / num_attention_heads = 65 is odd: rotary embeddings rotate pairs
    path = _broken_smoke(
        tmp_path,
        "model",
        scratch={"hidden_size": 130, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256},
    )
    with pytest.raises(ConfigError) as caught:
        read_study(path, check_environment=False)
    assert str(caught.value).startswith("model.scratch.hidden_size: ")
    assert "65" in str(caught.value)


def test_a_cross_key_check_names_the_first_key_and_is_caught_as_value_error(tmp_path):
    path = _broken_smoke(tmp_path, "data", prompt_min_tokens=9, prompt_max_tokens=3)
    with pytest.raises(ValueError, match=r"^data\.prompt_min_tokens: must be <= data\.prompt_max_tokens \(got 9 > 3\)"):
        read_study(path, check_environment=False)
