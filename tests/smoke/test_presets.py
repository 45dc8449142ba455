"""The papers' experiments run end to end on local stand-ins for their hub models and datasets.

`red train experiment=abc_imdb` with a tiny GPT-2 policy, a tiny 2-label DistilBERT sentiment
classifier (its own WordPiece tokenizer; score = logit[1] - logit[0]) and an IMDb-format file;
`red train experiment=red_nectar` with a tiny LLaMA policy and a tiny causal LLaMA RM sharing
a tokenizer with a chat template, and a Nectar-format file. Everything is built here from
config (nothing is downloaded); the real CLI runs in a subprocess.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from red_cli import runs
from red_cli.runs import read_metrics
from red_cli.toy.tokenizer import train_bpe, train_wordpiece
from tests.smoke.conftest import red

WORDS = ("the film was great awful boring lovely plot acting score scene actor story ending "
         "music slow funny sad bright dark long short director camera cast script").split()
# Small enough to finish fast; the experiment's own PPO settings (epochs, KL, lr) stay.
SMALL = ["ppo.iterations=2", "ppo.rollout_batch_size=4", "ppo.mini_batch_size=4",
         "ppo.micro_batch_size=2", "ppo.max_new_tokens=8", "logger=disabled",
         "logger.progress_bar=false", "checkpoint_every=1", "sample_every=1", "device=cpu"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _texts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n)]


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _run(tmp_path, *overrides):
    red("train", *overrides, cwd=tmp_path)
    found = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(found) == 1
    run = found[0]
    assert runs.read_status(run) == "complete"
    metrics = read_metrics(run / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1]
    for m in metrics:
        for key in ("objective/score", "objective/kl", "ppo/loss/policy", "ppo/loss/value",
                    "ppo/policy/entropy"):
            assert math.isfinite(m[key]), (key, m[key])
        assert m["rewards/sum_minus_score"] < 1e-4
    samples = [json.loads(line) for line in (run / "samples" / "iter_1.jsonl").read_text().splitlines()]
    return run, samples


@pytest.fixture(autouse=True)
def _offline_datasets(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_abc_imdb_on_local_stand_ins(tmp_path):
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
    data = tmp_path / "imdb.jsonl"
    data.write_text("".join(json.dumps({"text": r.replace(". ", ".<br /><br />", 1), "label": i % 2}) + "\n"
                            for i, r in enumerate(reviews)))

    run, samples = _run(tmp_path, "experiment=abc_imdb",
                        f"policy.path={_save(policy, tok, tmp_path / 'policy')}",
                        f"reward_model.path={_save(rm, rm_tok, tmp_path / 'rm')}",
                        f"dataset.path={data}", *SMALL)
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert cfg["experiment"] == "abc_imdb" and cfg["redistribution"]["mode"] == "abc"
    assert cfg["dataset"]["eval_path"] == str(data)
    for s in samples:
        words = s["prompt"].split()
        assert 2 <= len(words) <= 8 and any(r.startswith(s["prompt"]) for r in reviews)
        assert len(s["rewards"]) == len(s["tokens"])


def test_red_nectar_with_a_causal_rm_and_chat_templates(tmp_path):
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
    data = tmp_path / "nectar.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    _, samples = _run(tmp_path, "experiment=red_nectar",
                      f"policy.path={_save(policy, tok, tmp_path / 'policy')}",
                      f"reward_model.path={_save(rm, tok, tmp_path / 'rm')}",
                      f"dataset.path={data}",
                      # CPU stand-ins for the 8B presets' bf16 ZeRO-3.
                      "policy.dtype=float32", "reward_model.dtype=float32", "deepspeed=zero0",
                      "deepspeed.precision=fp32", *SMALL)
    assert {s["prompt"] for s in samples} <= set(questions)
