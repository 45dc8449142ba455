"""Packed rows (forwards.packs_rows, Rollout.packed) give the padded path's numbers: logprobs,
entropies, values, their gradients and a whole PPO update, on tiny GPT-2 and LLaMA models with
left-padded prompts and ragged responses."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from red_cli.data import left_pad
from red_cli.generation.rollout import Rollout
from red_cli.models import Critic, disable_dropout
from red_cli.rlhf.masking import masked_mean
from red_cli.rlhf.ppo import entropy_from_logits, gather_logprobs, policy_loss, value_loss
from red_cli.train import forwards
from red_cli.train.loop import ValueTrack, _ppo_epochs

V = 40
PROMPTS = [[1, 5, 6, 7, 8, 9], [1, 11], [1, 12, 13], [1, 14, 15, 16], [1], [1, 17, 18, 19, 20]]
LENGTHS = [1, 5, 3, 6, 2, 4]  # response lengths (every generated response has >= 1 token)


def tiny(kind: str) -> torch.nn.Module:
    if kind == "gpt2":
        config = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                            bos_token_id=1, eos_token_id=2, pad_token_id=0)
        return disable_dropout(GPT2LMHeadModel(config))
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config)


def rollout(seed: int = 0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    query, qmask = left_pad(PROMPTS, pad_id=0)
    lengths = torch.tensor(LENGTHS)
    rmask = torch.arange(max(LENGTHS))[None, :] < lengths[:, None]
    response = torch.randint(3, V, rmask.shape, generator=g).masked_fill(~rmask, 0)
    return Rollout([""] * len(PROMPTS), [""] * len(PROMPTS), query, qmask, response, rmask)


def models(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    policy = tiny(kind)
    critic = Critic(copy.deepcopy(policy.base_model), torch.nn.Linear(32, 1))
    return policy, critic


def padded():
    """The padded path: every model reads padded rows."""
    return mock.patch.object(forwards, "packs_rows", lambda model: False)


def test_packed_layout_holds_every_real_token_once():
    traj = rollout()
    packed = traj.packed()
    lengths = [len(q) + n for q, n in zip(PROMPTS, LENGTHS)]
    R, W = packed.input_ids.shape
    assert W == max(lengths) and R < len(PROMPTS) and R * W >= sum(lengths)
    ids, pos = packed.input_ids.flatten(), packed.position_ids.flatten()
    mask = traj.response_mask
    # The slot after each predictor holds that response token, at its padded-row position.
    torch.testing.assert_close(ids[packed.predictors + 1], traj.response_ids[mask])
    n_query = traj.query_mask.sum(1, keepdim=True).expand_as(mask)
    t = torch.arange(mask.shape[1]).expand_as(mask)
    torch.testing.assert_close(pos[packed.predictors + 1], (n_query + t)[mask])
    # Each sequence starts at position 0, so the starts count the rows (+ fillers).
    assert len(PROMPTS) <= int((pos == 0).sum()) <= len(PROMPTS) + R


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_packed_equals_padded_values_and_gradients(kind):
    traj = rollout()
    mask = traj.response_mask
    g = torch.Generator().manual_seed(1)
    old_lp, adv, old_v, returns = (torch.randn(mask.shape, generator=g) for _ in range(4))

    def run(policy, critic):
        logits = forwards.response_logits(policy, traj, 0.7)
        logprobs = forwards.per_token(gather_logprobs(logits, traj.response_ids[mask]), mask)
        entropy = forwards.per_token(entropy_from_logits(logits), mask)
        values = forwards.response_values(critic, traj)
        loss = (policy_loss(logprobs, old_lp - 3.0, adv, mask, 0.2).loss
                - 0.01 * masked_mean(entropy, mask)
                + value_loss(values, old_v, returns, mask, 0.2).loss)
        loss.backward()
        grads = [p.grad for m in (policy, critic) for p in m.parameters()]
        return logprobs, entropy, values, grads

    packed_models = models(kind)
    assert all(forwards.packs_rows(m) for m in packed_models)
    packed = run(*packed_models)
    with padded():
        reference = run(*models(kind))
    for got, want in zip(packed[:3], reference[:3]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert (got[~mask] == 0).all()
    for got, want in zip(packed[3], reference[3]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

    # Plain loop: each row alone, unpadded.
    policy, critic = packed_models
    with torch.no_grad():
        for i, q in enumerate(PROMPTS):
            ids = torch.cat([torch.tensor(q), traj.response_ids[i, :LENGTHS[i]]])[None]
            logits = policy(input_ids=ids).logits[0].float() / 0.7
            values = critic(ids, torch.ones_like(ids))[0]
            for t in range(LENGTHS[i]):
                z = logits[len(q) - 1 + t]
                p = z.softmax(-1)
                torch.testing.assert_close(packed[0][i, t], z.log_softmax(-1)[ids[0, len(q) + t]],
                                           atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(packed[1][i, t], -(p * p.log()).sum(), atol=1e-5,
                                           rtol=1e-5)
                torch.testing.assert_close(packed[2][i, t], values[len(q) - 1 + t], atol=1e-5,
                                           rtol=1e-5)


class _Leaky(torch.nn.Module):
    """A causal LM that lets packed sequences attend to each other (a full attention mask)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, position_ids, use_cache, attention_mask=None, logits_to_keep=0):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, use_cache=use_cache,
                          logits_to_keep=logits_to_keep)


def test_a_model_that_mixes_packed_sequences_reads_padded_rows():
    policy, _ = models("gpt2")
    leaky = _Leaky(policy)
    assert forwards.packs_rows(policy) and not forwards.packs_rows(leaky)
    traj = rollout()
    with torch.no_grad():
        torch.testing.assert_close(forwards.logprobs_of(leaky, traj, 1.0, micro_batch=4),
                                   forwards.logprobs_of(policy, traj, 1.0, micro_batch=4),
                                   atol=1e-5, rtol=1e-5)


class _Engine(torch.nn.Module):
    """DeepSpeed's engine at ZeRO-0, reduced: gradients averaged over `accum` micro batches,
    a step at each accumulation boundary. SGD, not Adam: Adam would turn rounding noise in
    gradients that are 0 in exact arithmetic (attention's key biases) into full steps."""

    def __init__(self, module, accum):
        super().__init__()
        self.module, self.accum, self.micro = module, accum, 0
        self.optimizer = torch.optim.SGD(module.parameters(), lr=0.1)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def backward(self, loss):
        (loss / self.accum).backward()

    def step(self):
        self.micro += 1
        if self.micro % self.accum == 0:
            self.optimizer.step()
            self.optimizer.zero_grad()

    def get_global_grad_norm(self):
        return None


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_packed_ppo_update_equals_the_padded_one(kind):
    """Two PPO epochs, two mini batches of two micro batches, entropy bonus and k3 loss: the same
    statistics and the same weights after every optimiser step."""
    traj = rollout()
    mask = traj.response_mask
    g = torch.Generator().manual_seed(2)
    old_lp, adv, old_v, returns, ref = (torch.randn(mask.shape, generator=g) for _ in range(5))
    cfg = SimpleNamespace(ppo=SimpleNamespace(ppo_epochs=2, micro_batch_size=2, temperature=0.7,
                                              cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
                                              ent_coef=0.01))

    def update():
        policy, critic = models(kind)
        policy_engine, critic_engine = _Engine(policy, 2), _Engine(critic, 2)
        # Old values far from the critic's: clipped every time. Inside the clip range,
        # old + (v - old) can round away from v and the clip fraction count a tie, which
        # rounding-level changes flip.
        track = ValueTrack("critic", critic_engine, old_v + 3.0, returns, "ppo/loss/value",
                           "ppo/val/clipfrac")
        torch.manual_seed(3)  # the mini batches' shuffle
        stats = _ppo_epochs(policy_engine, [track], traj, old_lp - 3.0, adv, cfg,
                            SimpleNamespace(mini_per_rank=4), kl_loss=(ref - 3.0, 0.1))
        return stats, [p.detach() for m in (policy, critic) for p in m.parameters()]

    stats, weights = update()
    with padded():
        want_stats, want_weights = update()
    assert stats.keys() == want_stats.keys()
    for key in stats:
        assert stats[key] == pytest.approx(want_stats[key], rel=1e-4, abs=1e-6), key
    for got, want in zip(weights, want_weights):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_fused_gelu_is_gpt2s_gelu_new():
    """models.fuse_gelu: the same function as transformers' gelu_new, in one kernel; a GPT-2's
    logits and gradients move by float rounding only."""
    from transformers.activations import NewGELUActivation

    from red_cli.models import FusedGELUTanh, fuse_gelu

    x = torch.linspace(-8, 8, 10001)
    torch.testing.assert_close(FusedGELUTanh()(x), NewGELUActivation()(x), atol=5e-7, rtol=0)
    model = tiny("gpt2")
    ids = torch.randint(3, V, (3, 9), generator=torch.Generator().manual_seed(0))
    plain = model(ids).logits
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused = fuse_gelu(copy.deepcopy(model))
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    assert sum(isinstance(m, FusedGELUTanh) for m in fused.modules()) == 2  # one per block
    out = fused(ids).logits
    out.sum().backward()
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    for n, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-5, rtol=1e-4)
