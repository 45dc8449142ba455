"""The estimators as the loop uses them: what each needs, what it returns, and the prompt
stream's groups of samples."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from red_cli.config.schema import PPOConfig
from red_cli.rlhf.critic_free import rewards_to_go
from red_cli.train.estimators import ESTIMATORS, build_estimator
from tests.unit.masks import random_masks


def _ppo(**kw):
    return OmegaConf.structured(PPOConfig(**kw))


def test_each_estimator_says_what_it_needs():
    assert set(ESTIMATORS) == {"gae", "reinforce_pp", "rloo", "grpo"}
    gae = build_estimator(_ppo(estimator="gae"))
    rpp = build_estimator(_ppo(estimator="reinforce_pp"))
    rloo = build_estimator(_ppo(estimator="rloo", samples_per_prompt=4))
    grpo = build_estimator(_ppo(estimator="grpo", samples_per_prompt=4))
    assert gae.needs_critic and not any(e.needs_critic for e in (rpp, rloo, grpo))
    assert grpo.kl_in_loss and not any(e.kl_in_loss for e in (gae, rpp, rloo))
    assert (rloo.samples_per_prompt, grpo.samples_per_prompt) == (4, 4)


def test_reinforce_pp_is_rewards_to_go_whitened_over_every_token():
    gen = torch.Generator().manual_seed(0)
    mask = random_masks(8, 7, gen)
    rewards = torch.randn(8, 7, generator=gen)
    est = build_estimator(_ppo(estimator="reinforce_pp", gamma=0.9))
    advantages, returns = est(rewards, None, mask)
    assert returns is None
    g = rewards_to_go(rewards, mask, 0.9)[mask].double()
    expected = (g - g.mean()) / (g.std() + 1e-8)  # unbiased std, as torch.std
    torch.testing.assert_close(advantages[mask].double(), expected, rtol=1e-5, atol=1e-6)
    assert (advantages[~mask] == 0).all()


def test_group_baselines_put_one_advantage_on_every_token_of_a_response():
    # Two prompts x 2 samples; sequence returns (sum of rewards): 3, 1 | 2, 2.
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    rewards = torch.tensor([[1.0, 2.0, 9.0], [1.0, 9.0, 9.0], [1.0, 0.5, 0.5], [0.0, 2.0, 9.0]])
    rloo = build_estimator(_ppo(estimator="rloo", samples_per_prompt=2))
    adv, returns = rloo(rewards, None, mask)
    assert returns is None
    assert adv.tolist() == [[2.0, 2.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    grpo = build_estimator(_ppo(estimator="grpo", samples_per_prompt=2))
    adv, _ = grpo(rewards, None, mask)
    # (3 - 2) / (std(3, 1) = sqrt(2)) on row 0's two tokens.
    assert adv[0, 0].item() == pytest.approx(1 / 2**0.5, rel=1e-5)
    assert adv[1, 0].item() == pytest.approx(-1 / 2**0.5, rel=1e-5)


def test_prompt_stream_repeats_each_prompt_in_consecutive_rows():
    from red_cli.data.prompts import PromptStream

    class Tok:
        pad_token_id, eos_token_id = 0, 1

        def __call__(self, text):
            return {"input_ids": [2 + len(w) for w in text.split()]}

    prompts = [f"prompt number {i}" for i in range(12)]
    stream = PromptStream(prompts, Tok(), global_batch=8, rank=1, world_size=2, seed=0,
                          max_prompt_length=8, samples_per_prompt=2)
    first = stream.next_batch().texts
    # 8 responses per rollout = 4 distinct prompts, 2 per rank, each twice in a row.
    assert len(first) == 4 and first[0] == first[1] and first[2] == first[3] != first[0]
    state = stream.state_dict()
    again = PromptStream(prompts, Tok(), global_batch=8, rank=1, world_size=2, seed=0,
                         max_prompt_length=8, samples_per_prompt=2)
    again.load_state_dict(state)
    assert again.next_batch().texts == stream.next_batch().texts
