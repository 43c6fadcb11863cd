"""Preference losses as named functions over summed sequence log-probs.

Every loss takes the summed completion log-probs of the policy and of the reference for the
chosen and the rejected response (tensors of shape [B]) and returns the per-example loss [B].
Each formula is written in its function's summary and pinned by a unit test on fixed numbers.
TRL is our training engine, but its sigmoid loss ignores ``label_smoothing`` and its ``ipo``
averages per token, so the formulas we promise live here, in one registry.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from dpolab.errors import ConfigError


class _ImportedOnUse:
    """A module imported at its first attribute access. The config checks read this registry
    in every Snakemake parse (twice per cluster job, in every dry run), where importing torch
    costs seconds and no loss is computed; the loss functions use torch as usual."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)


torch = _ImportedOnUse("torch")
F = _ImportedOnUse("torch.nn.functional")

LossFn = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its function, its parameters with defaults, and their checks."""

    name: str
    fn: LossFn
    defaults: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Callable[[float], str | None]] = field(default_factory=dict)
    reference_free: bool = False
    length_aware: bool = False
    summary: str = ""


LOSSES: dict[str, LossSpec] = {}


def register(
    name: str,
    *,
    checks: dict[str, Callable[[float], str | None]] | None = None,
    reference_free: bool = False,
    summary: str = "",
) -> Callable[[LossFn], LossFn]:
    """Add a loss to the registry; its keyword-only parameters (other than beta) and their
    defaults become the parameters a config may set for a variant using it."""

    def decorate(fn: LossFn) -> LossFn:
        signature = inspect.signature(fn)
        defaults = {
            key: p.default
            for key, p in signature.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and key != "beta"
        }
        length_aware = "chosen_lengths" in defaults
        LOSSES[name] = LossSpec(
            name=name,
            fn=fn,
            defaults={k: v for k, v in defaults.items() if k not in ("chosen_lengths", "rejected_lengths")},
            checks=dict(checks or {}),
            reference_free=reference_free,
            length_aware=length_aware,
            summary=summary or (fn.__doc__ or "").strip().splitlines()[0],
        )
        return fn

    return decorate


def _in_half_open_unit_half(value: float) -> str | None:
    return None if 0.0 <= value < 0.5 else "must be in [0, 0.5)"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def check_params(loss: str, params: dict, *, where: str) -> dict[str, float]:
    """Validate a variant's loss parameters; returns them merged with the defaults.

    ``where`` is the config path used in messages (for example ``variants.cdpo``).
    """
    if loss not in LOSSES:
        raise ConfigError(f"{where}.loss: unknown loss {loss!r}; known losses: {', '.join(sorted(LOSSES))}")
    spec = LOSSES[loss]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(sorted(spec.defaults)) or "none"
        raise ConfigError(f"{where}.{unknown[0]}: loss {loss!r} takes no parameter {unknown[0]!r} (allowed: {allowed})")
    merged = {**spec.defaults, **params}
    for key, value in merged.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: must be a number, got {value!r}")
        problem = spec.checks.get(key, lambda _v: None)(float(value))
        if problem:
            raise ConfigError(f"{where}.{key}: {problem}, got {value!r}")
    return {k: float(v) for k, v in merged.items()}


def log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> torch.Tensor:
    """h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


@register("dpo", summary="DPO (Rafailov et al. 2023): -log sigmoid(beta*h)")
def dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta):
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return -F.logsigmoid(beta * h)


@register("ipo", summary="IPO (Azar et al. 2024) on summed log-probs: (h - 1/(2*beta))^2")
def ipo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta):
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return (h - 1.0 / (2.0 * beta)) ** 2


@register(
    "cdpo",
    checks={"label_smoothing": _in_half_open_unit_half},
    summary="conservative DPO: -(1-e) log sigmoid(beta*h) - e log sigmoid(-beta*h)",
)
def cdpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta, label_smoothing=0.0):
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    e = label_smoothing
    return -(1.0 - e) * F.logsigmoid(beta * h) - e * F.logsigmoid(-beta * h)


@register("hinge", summary="SLiC hinge (Zhao et al. 2023): max(0, 1 - beta*h)")
def hinge(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta):
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return torch.relu(1.0 - beta * h)


@register(
    "robust",
    checks={"label_smoothing": _in_half_open_unit_half},
    summary="robust DPO (Chowdhury et al. 2024): [-(1-e) ls(beta*h) + e ls(-beta*h)] / (1-2e)",
)
def robust(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta, label_smoothing=0.0):
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    e = label_smoothing
    return (-(1.0 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)) / (1.0 - 2.0 * e)


def _lengths(chosen_lengths, rejected_lengths, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    if chosen_lengths is None or rejected_lengths is None:
        raise ValueError(f"loss {loss!r} needs chosen_lengths and rejected_lengths (completion token counts)")
    chosen, rejected = chosen_lengths.float(), rejected_lengths.float()
    if (chosen <= 0).any() or (rejected <= 0).any():
        raise ValueError(f"loss {loss!r}: completion lengths must be positive")
    return chosen, rejected


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


@register(
    "rdpo",
    checks={"alpha": _non_negative},
    summary="R-DPO (Park et al. 2024): -log sigmoid(beta*h + alpha*(|y_w| - |y_l|))",
)
def rdpo(
    policy_chosen,
    policy_rejected,
    ref_chosen,
    ref_rejected,
    *,
    beta,
    alpha=0.01,
    chosen_lengths=None,
    rejected_lengths=None,
):
    # Crediting the margin with the length difference means a longer chosen response already
    # "wins" by alpha per token, so the policy is not pushed to grow its own length to win.
    chosen_len, rejected_len = _lengths(chosen_lengths, rejected_lengths, "rdpo")
    h = log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return -F.logsigmoid(beta * h + alpha * (chosen_len - rejected_len))


@register(
    "simpo",
    checks={"gamma": _non_negative},
    reference_free=True,
    summary="SimPO (Meng et al. 2024): -log sigmoid(beta*(log pi(y_w)/|y_w| - log pi(y_l)/|y_l|) - gamma)",
)
def simpo(
    policy_chosen,
    policy_rejected,
    ref_chosen,
    ref_rejected,
    *,
    beta,
    gamma=0.5,
    chosen_lengths=None,
    rejected_lengths=None,
):
    # Reference-free: the reference log-probs are accepted (one signature for all losses) and unused.
    chosen_len, rejected_len = _lengths(chosen_lengths, rejected_lengths, "simpo")
    return -F.logsigmoid(beta * (policy_chosen / chosen_len - policy_rejected / rejected_len) - gamma)


@register(
    "dpo_norm",
    summary="length-normalised DPO (Tulu 3): -log sigmoid(beta*(r_w/|y_w| - r_l/|y_l|)), r = log pi - log ref",
)
def dpo_norm(
    policy_chosen,
    policy_rejected,
    ref_chosen,
    ref_rejected,
    *,
    beta,
    chosen_lengths=None,
    rejected_lengths=None,
):
    chosen_len, rejected_len = _lengths(chosen_lengths, rejected_lengths, "dpo_norm")
    h_norm = (policy_chosen - ref_chosen) / chosen_len - (policy_rejected - ref_rejected) / rejected_len
    return -F.logsigmoid(beta * h_norm)


def compute(
    name: str,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    **params,
) -> torch.Tensor:
    """Per-example loss [B] of the registered loss ``name``.

    Length-aware losses also take ``chosen_lengths`` / ``rejected_lengths`` (completion token
    counts, shape [B]); other losses ignore them, so callers may always pass them.
    """
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    spec = LOSSES[name]
    lengths = {k: params.pop(k) for k in ("chosen_lengths", "rejected_lengths") if k in params}
    if spec.length_aware:
        params.update(lengths)
    return spec.fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta, **params)
