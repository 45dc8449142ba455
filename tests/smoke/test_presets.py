"""Every experiment preset runs one iteration with every redistribution mode, on local stand-ins
for its hub models and datasets (the preset x mode matrix).

- abc_imdb: a tiny GPT-2 policy, a tiny 2-label DistilBERT sentiment classifier (its own
  WordPiece tokenizer; score = logit[1] - logit[0]) and an IMDb-format file;
- red_nectar: a tiny LLaMA policy and a tiny causal LLaMA RM sharing a tokenizer with a chat
  template, and a Nectar-format file;
- abc_tldr, red_tldr: a tiny Pythia (GPT-NeoX) policy and RM sharing a tokenizer, and a
  TL;DR-format file;
- reproduce, toy_quick: the embedded toy world (its tiny build); toy_safe: the same with a
  small cost model;
- red_saferlhf: a tiny LLaMA policy, and tiny LLaMA reward and cost models saved the way
  safe-rlhf saves its Beaver score models (`score_head`), and a PKU-SafeRLHF-format file.

Everything is built here from config (nothing is downloaded). One real `red train -m` sweep
per family runs its experiments x modes, one iteration each.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from red_cli import runs
from red_cli.modes import registry
from red_cli.runs import read_metrics
from red_cli.toy.tokenizer import train_bpe, train_wordpiece
from tests.smoke.conftest import red

WORDS = ("the film was great awful boring lovely plot acting score scene actor story ending "
         "music slow funny sad bright dark long short director camera cast script").split()
MODES = ",".join(registry())
# Small enough to finish fast; the experiment's own PPO settings (epochs, KL, lr) stay.
SMALL = ["ppo.iterations=1", "ppo.rollout_batch_size=4", "ppo.mini_batch_size=4",
         "ppo.micro_batch_size=2", "ppo.max_new_tokens=8", "logger=disabled",
         "logger.progress_bar=false", "checkpoint_every=1", "sample_every=1", "device=cpu",
         "threads=1"]
# CPU stand-ins for presets that ask for bf16 weights and ZeRO-2/3 on GPUs.
CPU = ["policy.dtype=float32", "reward_model.dtype=float32", "deepspeed=zero0",
       "deepspeed.precision=fp32"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _texts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n)]


def _save(model, tokenizer, path) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def _offline_datasets(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _imdb(root: Path) -> tuple[list[str], list[str]]:
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )

    reviews = _texts(24, 45, seed=0)  # > 200 characters each: imdb's min_text_chars
    assert all(len(r) > 200 for r in reviews)
    tok = train_bpe(reviews, vocab_size=200, padding_side="left")
    policy = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    rm_tok = train_wordpiece(reviews, vocab_size=120, padding_side="right", model_max_length=512)
    rm = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=len(rm_tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
        max_position_embeddings=512, num_labels=2, pad_token_id=rm_tok.pad_token_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}))
    data = root / "imdb.jsonl"
    data.write_text("".join(json.dumps({"text": r.replace(". ", ".<br /><br />", 1), "label": i % 2})
                            + "\n" for i, r in enumerate(reviews)))
    return [f"policy.path={_save(policy, tok, root / 'policy')}",
            f"reward_model.path={_save(rm, rm_tok, root / 'rm')}", f"dataset.path={data}"], reviews


def _nectar(root: Path) -> tuple[list[str], list[str]]:
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    questions = [q.capitalize() + "?" for q in _texts(12, 6, seed=1)]
    tok = train_bpe(questions + _texts(40, 12, seed=2), vocab_size=220, padding_side="left",
                    model_max_length=2048)
    tok.chat_template = CHAT_TEMPLATE
    arch = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    policy = LlamaForCausalLM(LlamaConfig(**arch))
    rm = LlamaForSequenceClassification(LlamaConfig(**arch, num_labels=1))
    rows = [{"prompt": f"\n\nHuman: {q}\n\nAssistant:",
             "answers": [{"answer": "No idea.", "model": "b", "rank": 2.0},
                         {"answer": "The film.", "model": "a", "rank": 1.0}],
             "turns": 1, "num_responses": 2, "source": ["test"], "good_natured": True}
            for q in questions]
    rows.append({**rows[0], "prompt": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: More?\n\nAssistant:",
                 "turns": 2})
    data = root / "nectar.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"policy.path={_save(policy, tok, root / 'policy')}",
            f"reward_model.path={_save(rm, tok, root / 'rm')}", f"dataset.path={data}",
            *CPU], questions


def _tldr(root: Path) -> tuple[list[str], list[str]]:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    posts = [f"SUBREDDIT: r/movies\nTITLE: {t}\nPOST: {p}\nTL;DR:"
             for t, p in zip(_texts(10, 4, seed=3), _texts(10, 20, seed=4))]
    tok = train_bpe(posts + _texts(30, 10, seed=5), vocab_size=240, padding_side="left",
                    model_max_length=2048)
    arch = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=2048, rotary_pct=0.25,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    policy = GPTNeoXForCausalLM(GPTNeoXConfig(**arch))
    rm = GPTNeoXForSequenceClassification(GPTNeoXConfig(**arch, num_labels=1))
    data = root / "tldr.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": " a film post."}) + "\n"
                            for p in posts))
    return [f"policy.path={_save(policy, tok, root / 'policy')}",
            f"reward_model.path={_save(rm, tok, root / 'rm')}", f"dataset.path={data}",
            *CPU], posts


def _beaver(model, tokenizer, path: Path) -> str:
    """Save a one-output LLaMA sequence classifier the way safe-rlhf saves its Beaver score
    models: architecture LlamaModelForScore, the output layer named `score_head`, no
    num_labels in the config (so transformers reads the default, 2)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    state = {("score_head.weight" if k == "score.weight" else k): v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    for key in ("id2label", "label2id", "num_labels"):
        config.pop(key, None)
    config.update(architectures=["LlamaModelForScore"], score_dim=1, bias=False)
    (path / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(path)
    return str(path)


def _saferlhf(root: Path) -> tuple[list[str], list[str], dict]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    questions = [q.capitalize() + "?" for q in _texts(12, 6, seed=6)]
    tok = train_bpe(questions + _texts(40, 12, seed=7), vocab_size=220, padding_side="left",
                    model_max_length=2048)
    arch = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(**arch))
    reward = LlamaForSequenceClassification(LlamaConfig(**arch, num_labels=1))
    cost = LlamaForSequenceClassification(LlamaConfig(**arch, num_labels=1))
    rows = [{"prompt": q, "response_0": "No.", "response_1": "The film.", "better_response_id": 1,
             "safer_response_id": 0, "is_response_0_safe": True, "is_response_1_safe": False}
            for q in questions]
    data = root / "pku.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    heads = {"reward": reward.score.weight.detach().clone(), "cost": cost.score.weight.detach().clone()}
    return [f"policy.path={_save(policy, tok, root / 'policy')}",
            f"reward_model.path={_beaver(reward, tok, root / 'reward')}",
            f"cost_model.path={_beaver(cost, tok, root / 'cost')}", f"dataset.path={data}",
            "cost_model.dtype=float32", *CPU], questions, heads


def _sweep(tmp_path: Path, experiments: str, stand_ins: list[str]) -> list[Path]:
    red("train", "-m", f"experiment={experiments}", f"redistribution={MODES}", *stand_ins,
        *SMALL, "hydra.sweep.dir=sweep", cwd=tmp_path)
    points = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(points) == len(experiments.split(",")) * len(registry())
    for point in points:
        assert runs.read_status(point) == "complete", point
        [m] = read_metrics(point / "metrics.jsonl")
        for key in ("objective/score", "objective/kl", "ppo/loss/policy", "ppo/policy/entropy"):
            assert math.isfinite(m[key]), (point.name, key, m[key])
        # PAPERS.md invariant 2 through alignment and shaping, in every mode.
        assert m["rewards/sum_minus_score"] < 1e-4, point.name
    return points


def _samples(point: Path) -> list[dict]:
    return [json.loads(line) for line in (point / "samples" / "iter_0.jsonl").read_text().splitlines()]


def _config(point: Path) -> dict:
    return yaml.safe_load((point / "config.yaml").read_text())


def test_abc_imdb_with_every_mode(tmp_path):
    stand_ins, reviews = _imdb(tmp_path)
    points = _sweep(tmp_path, "abc_imdb", stand_ins)
    for point in points:
        cfg = _config(point)
        assert cfg["experiment"] == "abc_imdb" and cfg["redistribution"]["abc"]["beta"] == 0.8
        assert cfg["dataset"]["eval_path"] == str(tmp_path / "imdb.jsonl")
        for s in _samples(point):
            words = s["prompt"].split()
            assert 2 <= len(words) <= 8 and any(r.startswith(s["prompt"]) for r in reviews)
            assert len(s["rewards"]) == len(s["tokens"])
    assert {_config(p)["redistribution"]["mode"] for p in points} == set(registry())


def test_red_nectar_with_every_mode(tmp_path):
    """A causal RM read through its chat template, single-turn Nectar prompts only."""
    stand_ins, questions = _nectar(tmp_path)
    for point in _sweep(tmp_path, "red_nectar", stand_ins):
        assert {s["prompt"] for s in _samples(point)} <= set(questions)
        assert _config(point)["redistribution"]["td"]["beta_c"] == 1.0


def test_tldr_experiments_with_every_mode(tmp_path):
    stand_ins, posts = _tldr(tmp_path)
    for point in _sweep(tmp_path, "abc_tldr,red_tldr", stand_ins):
        assert {s["prompt"] for s in _samples(point)} <= {p.rstrip() for p in posts}


def test_toy_experiments_with_every_mode(tiny_toy, tmp_path):
    _sweep(tmp_path, "reproduce,toy_quick", ["toy=tiny"])


@pytest.mark.slow  # the default run has toy_safe's wiring in tests/smoke/test_safety.py
def test_toy_safe_with_every_mode(tiny_toy, tmp_path):
    """The toy safety world (tiny sizes, a small cost model): cost and reward redistributed by
    the same mode, lambda moving, the gold cost logged."""
    for point in _sweep(tmp_path, "toy_safe", ["toy=tiny", "toy.cost_model_steps=20"]):
        [m] = read_metrics(point / "metrics.jsonl")
        assert m["costs/sum_minus_score"] < 1e-4 and m["lagrange/lambda"] != 1.0
        assert math.isfinite(m["objective/gold_cost"]) and "ppo/loss/cost_value" in m


def test_red_saferlhf_with_every_mode(tmp_path):
    """Beaver-format reward and cost models (safe-rlhf's score_head), PKU-SafeRLHF-format
    prompts in safe-rlhf's template, PPO-Lagrangian with the same mode on both."""
    from red_cli import models

    stand_ins, questions, heads = _saferlhf(tmp_path)
    template = "BEGINNING OF CONVERSATION: USER: {} ASSISTANT:"
    for point in _sweep(tmp_path, "red_saferlhf", stand_ins):
        [m] = read_metrics(point / "metrics.jsonl")
        assert m["costs/sum_minus_score"] < 1e-4 and math.isfinite(m["objective/cost"])
        assert "ppo/loss/cost_value" in m and m["lagrange/lambda"] > 0
        assert {s["prompt"] for s in _samples(point)} <= {template.format(q) for q in questions}
        cfg = _config(point)
        assert cfg["ppo"]["lagrangian"]["lambda_max"] == 5.0 and cfg["ppo"]["kl_coef"] == 0.01
    # The checkpoints' own heads were read, not random ones.
    for name in ("reward", "cost"):
        model = models.load_reward_model(str(tmp_path / name), score_head="score_head")
        assert torch.equal(model.score.weight, heads[name])
