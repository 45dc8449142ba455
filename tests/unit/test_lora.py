"""LoRA: the reference is the policy with its adapters off, which is exactly the base model."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from red_cli import models
from red_cli.data import left_pad
from red_cli.errors import ConfigError
from red_cli.generation.rollout import Rollout
from red_cli.train.forwards import logprobs_of


def _tiny_gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2,
                                       n_head=2, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    return models.disable_dropout(model)  # as load_policy does: forwards are repeatable


def _rollout() -> Rollout:
    query, qmask = left_pad([[1, 5, 6, 7], [1, 11], [1, 12, 13]], pad_id=0)
    response = torch.tensor([[20, 21, 2, 0], [22, 23, 24, 25], [26, 2, 0, 0]])
    rmask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    return Rollout(["a", "b", "c"], ["", "", ""], query, qmask, response, rmask)


def test_lora_reference_is_the_base_model_without_a_copy():
    base = _tiny_gpt2(0)
    untouched = copy.deepcopy(base)
    policy = models.add_lora(base, r=4, alpha=8, dropout=0.0, target_modules=["all-linear"])
    # Trained adapters: B starts at zero (a no-op), so give every adapter weight a value.
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.5)
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == {
        n for n, _ in policy.named_parameters() if "lora_" in n}

    reference = models.reference_from(policy)
    assert reference.module is policy, "the reference must not copy the policy"
    traj = _rollout()
    ref = logprobs_of(reference, traj, temperature=0.7, micro_batch=2)
    expected = logprobs_of(untouched, traj, temperature=0.7, micro_batch=2)
    torch.testing.assert_close(ref, expected, atol=1e-6, rtol=1e-6)

    # The adapters are back on afterwards, and they do change the policy.
    trained = logprobs_of(policy, traj, temperature=0.7, micro_batch=2)
    again = logprobs_of(reference, traj, temperature=0.7, micro_batch=2)
    assert not torch.allclose(trained[traj.response_mask], expected[traj.response_mask], atol=1e-3)
    torch.testing.assert_close(again, ref)


def test_full_fine_tuning_reference_is_a_frozen_copy():
    policy = _tiny_gpt2(1)
    reference = models.reference_from(policy)
    assert reference is not policy and not any(p.requires_grad for p in reference.parameters())


def test_critic_lora_trains_adapters_and_the_whole_head():
    policy = _tiny_gpt2(2)
    critic = models.Critic(copy.deepcopy(policy.base_model), torch.nn.Linear(32, 1))
    models.add_critic_lora(critic, r=2, alpha=4, dropout=0.0, target_modules=[])
    trainable = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in critic.named_parameters()
                         if "lora_" in n or n.startswith("head.")}
    assert any("lora_" in n for n in trainable)


def test_unknown_target_module_names_the_key():
    with pytest.raises(ConfigError, match=r"policy\.lora\.target_modules=\['q_proj'\]"):
        models.add_lora(_tiny_gpt2(3), r=4, alpha=8, dropout=0.0, target_modules=["q_proj"])
