"""Each loss pinned to its formula (its registry summary) on fixed numbers."""

import math

import pytest
import torch

from dpolab import losses
from dpolab.errors import ConfigError

# Summed sequence log-probs for a batch of three pairs.
POLICY_CHOSEN = torch.tensor([-10.0, -20.0, -5.0])
POLICY_REJECTED = torch.tensor([-12.0, -18.0, -9.0])
REF_CHOSEN = torch.tensor([-11.0, -19.0, -6.0])
REF_REJECTED = torch.tensor([-11.0, -19.0, -6.0])
# h = (pc - rc) - (pr - rr) = [1 - (-1), -1 - 1, 1 - (-3)] = [2, -2, 4]
H = [2.0, -2.0, 4.0]


def _compute(name, beta, **params):
    return losses.compute(name, POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, beta=beta, **params)


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_margin_is_difference_of_log_ratios():
    h = losses.log_ratio_margin(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)
    assert h.tolist() == H


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_dpo_formula(beta):
    expected = [-_log_sigmoid(beta * h) for h in H]
    assert _compute("dpo", beta).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_ipo_formula_on_summed_logps(beta):
    expected = [(h - 1 / (2 * beta)) ** 2 for h in H]
    assert _compute("ipo", beta).tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cdpo_formula(eps):
    beta = 0.1
    expected = [-(1 - eps) * _log_sigmoid(beta * h) - eps * _log_sigmoid(-beta * h) for h in H]
    assert _compute("cdpo", beta, label_smoothing=eps).tolist() == pytest.approx(expected, abs=1e-6)


def test_hinge_and_robust_formulas():
    beta, eps = 0.5, 0.2
    assert _compute("hinge", beta).tolist() == pytest.approx([max(0.0, 1 - beta * h) for h in H], abs=1e-6)
    expected = [(-(1 - eps) * _log_sigmoid(beta * h) + eps * _log_sigmoid(-beta * h)) / (1 - 2 * eps) for h in H]
    assert _compute("robust", beta, label_smoothing=eps).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_values_when_policy_equals_reference(beta):
    same = torch.tensor([-7.0, -3.5])
    args = (same, same - 2.0, same, same - 2.0)
    assert losses.compute("dpo", *args, beta=beta).tolist() == pytest.approx([math.log(2)] * 2, abs=1e-6)
    assert losses.compute("cdpo", *args, beta=beta, label_smoothing=0.1).tolist() == pytest.approx(
        [math.log(2)] * 2, abs=1e-6
    )
    assert losses.compute("ipo", *args, beta=beta).tolist() == pytest.approx([(1 / (2 * beta)) ** 2] * 2, rel=1e-6)


def test_cdpo_with_zero_smoothing_is_dpo():
    assert torch.allclose(_compute("cdpo", 0.1, label_smoothing=0.0), _compute("dpo", 0.1))


def test_losses_are_differentiable_and_lengths_are_ignored_by_length_blind_losses():
    policy_chosen = POLICY_CHOSEN.clone().requires_grad_(True)
    loss = losses.compute(
        "dpo",
        policy_chosen,
        POLICY_REJECTED,
        REF_CHOSEN,
        REF_REJECTED,
        beta=0.1,
        chosen_lengths=torch.tensor([3, 4, 5]),
        rejected_lengths=torch.tensor([3, 4, 5]),
    )
    loss.sum().backward()
    # d/dpc of -log sigmoid(beta*h) = -beta * sigmoid(-beta*h)
    expected = [-0.1 / (1 + math.exp(0.1 * h)) for h in H]
    assert policy_chosen.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_unknown_loss_and_bad_beta():
    with pytest.raises(KeyError, match="unknown loss 'nope'"):
        _compute("nope", 0.1)
    with pytest.raises(ValueError, match="beta must be > 0"):
        _compute("dpo", 0.0)


def test_check_params_names_the_key():
    assert losses.check_params("cdpo", {"label_smoothing": 0.1}, where="variants.cdpo") == {"label_smoothing": 0.1}
    with pytest.raises(ConfigError, match=r"variants\.cdpo\.label_smoothing: must be in \[0, 0\.5\)"):
        losses.check_params("cdpo", {"label_smoothing": 0.5}, where="variants.cdpo")
    with pytest.raises(ConfigError, match=r"variants\.x\.loss: unknown loss 'dpoo'"):
        losses.check_params("dpoo", {}, where="variants.x")
    with pytest.raises(ConfigError, match=r"variants\.d\.label_smoothing: loss 'dpo' takes no parameter"):
        losses.check_params("dpo", {"label_smoothing": 0.1}, where="variants.d")


# Completion token counts for the same three pairs: chosen longer, shorter, equal.
CHOSEN_LENGTHS = torch.tensor([10, 4, 8])
REJECTED_LENGTHS = torch.tensor([5, 8, 8])


def _compute_with_lengths(name, beta, **params):
    return _compute(name, beta, chosen_lengths=CHOSEN_LENGTHS, rejected_lengths=REJECTED_LENGTHS, **params)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.2])
def test_rdpo_formula(alpha):
    beta = 0.1
    diffs = [10 - 5, 4 - 8, 8 - 8]
    expected = [-_log_sigmoid(beta * h + alpha * d) for h, d in zip(H, diffs)]
    assert _compute_with_lengths("rdpo", beta, alpha=alpha).tolist() == pytest.approx(expected, abs=1e-6)


def test_rdpo_with_zero_alpha_is_dpo():
    assert _compute_with_lengths("rdpo", 0.1, alpha=0.0).tolist() == pytest.approx(
        _compute("dpo", 0.1).tolist(), abs=1e-7
    )


@pytest.mark.parametrize(("beta", "gamma"), [(2.0, 0.5), (2.5, 1.0), (0.1, 0.0)])
def test_simpo_formula_is_reference_free(beta, gamma):
    pc, pr = [-10.0, -20.0, -5.0], [-12.0, -18.0, -9.0]
    expected = [-_log_sigmoid(beta * (c / lc - r / lr) - gamma) for c, r, lc, lr in zip(pc, pr, [10, 4, 8], [5, 8, 8])]
    got = _compute_with_lengths("simpo", beta, gamma=gamma)
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    other_reference = losses.compute(
        "simpo",
        POLICY_CHOSEN,
        POLICY_REJECTED,
        REF_CHOSEN * 3,
        REF_REJECTED - 7,
        beta=beta,
        gamma=gamma,
        chosen_lengths=CHOSEN_LENGTHS,
        rejected_lengths=REJECTED_LENGTHS,
    )
    assert torch.equal(got, other_reference)
    assert losses.LOSSES["simpo"].reference_free


def test_dpo_norm_formula():
    beta = 0.5
    # log-ratios: chosen pc - rc = [1, -1, 1], rejected pr - rr = [-1, 1, -3]
    expected = [
        -_log_sigmoid(beta * (rc / lc - rr / lr))
        for rc, rr, lc, lr in zip([1, -1, 1], [-1, 1, -3], [10, 4, 8], [5, 8, 8])
    ]
    assert _compute_with_lengths("dpo_norm", beta).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["rdpo", "simpo", "dpo_norm"])
def test_length_aware_losses_need_lengths(name):
    assert losses.LOSSES[name].length_aware
    with pytest.raises(ValueError, match="chosen_lengths"):
        _compute(name, 0.1)


def test_length_loss_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"variants.rdpo.alpha: must be >= 0"):
        losses.check_params("rdpo", {"alpha": -0.1}, where="variants.rdpo")
    with pytest.raises(ConfigError, match=r"variants.simpo.gamma: must be >= 0"):
        losses.check_params("simpo", {"gamma": -1}, where="variants.simpo")
    assert losses.check_params("simpo", {}, where="variants.simpo") == {"gamma": 0.5}
