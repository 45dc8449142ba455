"""Per-token KL estimators, KL-in-the-reward shaping and KL coefficient controllers.

Shapes: b batch, T response length. ``response_mask`` [b, T] bool is True on real response
tokens (through EOS) and False on padding. Log-probabilities are those of the sampled tokens
under the rollout policy (``logprobs``) and the frozen reference (``ref_logprobs``); the
estimators below estimate KL(pi || pi_ref) from samples of pi.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


def k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``k1 = log pi - log pi_ref``: unbiased, high variance, can be negative per token.

    Schulman, "Approximating KL Divergence" (2020); OpenRLHF ``compute_approx_kl``. Any shape.
    """
    return logprobs - ref_logprobs


def k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``k2 = 0.5 * (log pi - log pi_ref)^2``: biased, low variance, never negative.

    Schulman, "Approximating KL Divergence" (2020); OpenRLHF ``compute_approx_kl``. Any shape.
    """
    log_ratio = logprobs - ref_logprobs
    return 0.5 * log_ratio * log_ratio


def k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``k3 = (exp(log pi_ref - log pi) - 1) - (log pi_ref - log pi)``: unbiased, never negative.

    Schulman, "Approximating KL Divergence" (2020); OpenRLHF ``compute_approx_kl`` (which also
    clamps the result to [-10, 10]; not done here, so large policy drift stays visible).
    Any shape.
    """
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": k1,
    "k2": k2,
    "k3": k3,
}


def get_kl_estimator(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Look a KL estimator up by name; ValueError lists the valid names."""
    try:
        return KL_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {name!r}; valid choices: {sorted(KL_ESTIMATORS)}"
        ) from None


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    estimator: str = "k1",
) -> torch.Tensor:
    """Per-token KL estimate, exactly 0 outside ``response_mask``.

    ``kl_t = k(logprobs_t, ref_logprobs_t) * m_t`` with ``k`` one of ``KL_ESTIMATORS``.
    ``torch.where`` keeps garbage log-probs on padding (e.g. -inf) out of the result.

    Args:
        logprobs: [b, T] log pi(y_t) of the sampled tokens.
        ref_logprobs: [b, T] log pi_ref(y_t).
        response_mask: [b, T] bool, True on real response tokens.
        estimator: "k1", "k2" or "k3".

    Returns:
        kl: [b, T].
    """
    kl = get_kl_estimator(estimator)(logprobs, ref_logprobs)
    return torch.where(response_mask, kl, kl.new_zeros(()))


class KLShapedRewards(NamedTuple):
    """Result of ``add_kl_to_rewards``."""

    rewards: torch.Tensor
    """[b, T] rewards - kl_coef * kl, 0 outside the mask."""
    kl: torch.Tensor
    """[b, T] per-token KL estimate, 0 outside the mask (log it as ``objective/kl``)."""


def add_kl_to_rewards(
    rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> KLShapedRewards:
    """Put the KL penalty inside the per-token reward.

    ``r'_t = (r_t - kl_coef * kl_t) * m_t`` (Ziegler et al. 2019; TRL PPO trainer; RED and
    safe-rlhf use the same reward, with no separate KL loss term). Inputs come from the
    rollout and carry no gradient.

    Args:
        rewards: [b, T] redistributed rewards (``red_cli.rlhf.redistribution``).
        logprobs: [b, T] log pi(y_t) under the rollout policy.
        ref_logprobs: [b, T] log pi_ref(y_t).
        response_mask: [b, T] bool, True on real response tokens.
        kl_coef: penalty weight (e.g. a controller's ``.value``).
        estimator: "k1", "k2" or "k3".
    """
    kl = kl_penalty(logprobs, ref_logprobs, response_mask, estimator)
    shaped = torch.where(response_mask, rewards - kl_coef * kl, rewards.new_zeros(()))
    return KLShapedRewards(rewards=shaped, kl=kl)


class FixedKLController:
    """A constant KL coefficient with the same interface as ``AdaptiveKLController``."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller that steers the observed KL towards ``target``.

    ``e = clip(current_kl / target - 1, -0.2, 0.2)``; ``value *= 1 + e * n_steps / horizon``
    (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences";
    TRL ``AdaptiveKLController``; OpenRLHF ``kl_controller.py``). ``n_steps`` is the number
    of samples (episodes) seen since the last update, as in TRL.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(
                f"AdaptiveKLController needs target > 0 and horizon > 0, "
                f"got target={target}, horizon={horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        # Only the coefficient is state; target and horizon come from the (frozen) config.
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
