"""The checks that run when a config is read (dpolab.checks): what the machine, the data files and
the services a study names can do."""

import pytest

from dpolab.errors import ConfigError


def test_bf16_is_refused_on_gpus_without_it():
    from dpolab.checks import check_gpu_precision

    with pytest.raises(ConfigError, match=r"training.precision: bf16 .*Tesla V100-SXM2-32GB \(7\)"):
        check_gpu_precision("bf16", [("Tesla V100-SXM2-32GB", 7.0)])
    check_gpu_precision("bf16", [("NVIDIA H100 80GB HBM3", 9.0)])
    check_gpu_precision("fp16", [("Tesla V100-SXM2-32GB", 7.0)])
    check_gpu_precision("bf16", [])  # no GPU on this machine (a login node): the job checks on its node
