"""One TRL PPOTrainer run for scripts/bench_vs_trl.py, timed per iteration. Runs in TRL's own
virtual environment (.venv-trl: trl 1.12, the last release with PPO, as
`trl.experimental.ppo`), never in red's; it imports nothing from red_cli.

    .venv-trl/bin/python scripts/trl_ppo_runner.py --workdir outputs/bench_vs_trl/small \
        --batch 16 --new-tokens 24 --iterations 12 --threads 2 --out trl.json [--gc-freeze]

The work directory is the one bench_vs_trl.py prepares: policy/ (GPT-2 LM, tokenizer with
pad != eos, left padding), rm/ (GPT-2 sequence classifier, 1 label) and prompts.jsonl.

TRL runs as shipped: `PPOTrainer.train()`, unmodified. What this file adds:
  - a TrainerCallback that stamps time.perf_counter() at train begin and at every step end
    (`on_step_end`, once per PPO iteration): iteration i's time is the difference between
    consecutive stamps, so it holds everything TRL's loop does once per iteration, including
    its `gc.collect()` calls and its logging;
  - phase timers: the module-level names that `train()` calls (batch_generation, forward,
    get_reward, empty_cache, and `gc` inside ppo_trainer) are wrapped by thin timing
    shims that call the original; they add two perf_counter() calls per call;
  - --gc-freeze: `gc.collect(); gc.freeze()` after the trainer is built, just before
    `train()`: every object that exists then (the modules of torch, transformers, datasets,
    pandas...; the models) moves to the permanent generation, which `gc.collect()` never
    traverses again, so TRL's two full collections per iteration only walk what the
    iteration itself allocated.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--iterations", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gc-freeze", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as mod

    # ---------------------------------------------------------------- phase timers
    phase = defaultdict(float)   # seconds since the last step end, by phase
    calls = defaultdict(int)

    def timed(name_of, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                key = name_of(*a, **kw)
                phase[key] += time.perf_counter() - t0
                calls[key] += 1
        return wrapper

    mod.batch_generation = timed(lambda *a, **k: "generate", mod.batch_generation)
    # forward(): the reference policy's forward during the rollout (no grad), the policy +
    # value wrapper's forward in the PPO epochs (grad).
    mod.forward = timed(lambda *a, **k: "update_forward" if torch.is_grad_enabled()
                        else "forwards", mod.forward)
    # get_reward(): the value model's and the reward model's forwards on the rollout.
    mod.get_reward = timed(lambda *a, **k: "forwards", mod.get_reward)
    mod.empty_cache = timed(lambda *a, **k: "empty_cache", mod.empty_cache)

    class TimedGC:
        """`gc` as ppo_trainer sees it: collect() timed, everything else the real module."""

        def __getattr__(self, name):
            return getattr(gc, name)

        collect = staticmethod(timed(lambda *a, **k: "gc_collect", gc.collect))

    mod.gc = TimedGC()

    # ---------------------------------------------------------------- setup
    wd = args.workdir
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(wd, "policy"), padding_side="left")
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    with open(os.path.join(wd, "prompts.jsonl")) as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]

    def encode(prompt):
        # As red encodes a prompt (red_cli.data.prompts.encode_prompt): the toy tokenizer
        # appends EOS (for its reward models), which would end the response at once.
        ids = tokenizer(prompt)["input_ids"]
        while ids and ids[-1] == tokenizer.eos_token_id:
            ids = ids[:-1]
        return ids

    dataset = Dataset.from_dict({"input_ids": [encode(p) for p in prompts]})

    torch.manual_seed(args.seed)
    policy = AutoModelForCausalLM.from_pretrained(os.path.join(wd, "policy"))
    ref_policy = AutoModelForCausalLM.from_pretrained(os.path.join(wd, "policy"))
    reward_model = AutoModelForSequenceClassification.from_pretrained(os.path.join(wd, "rm"),
                                                                      num_labels=1)
    value_model = AutoModelForSequenceClassification.from_pretrained(os.path.join(wd, "rm"),
                                                                     num_labels=1)

    out_dir = tempfile.mkdtemp(prefix="trl_ppo_")
    config = PPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.batch,  # = the mini batch: one optimiser step per epoch
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=args.epochs,
        local_rollout_forward_batch_size=args.batch,  # rollout forwards in one chunk, as red's
        total_episodes=args.batch * args.iterations,
        response_length=args.new_tokens,
        stop_token="eos",
        temperature=1.0,
        learning_rate=3e-5,
        kl_coef=0.05,
        vf_coef=0.1,
        missing_eos_penalty=None,
        num_sample_generations=0,  # no extra greedy sampling of an eval set during training
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy,
                         ref_model=ref_policy, reward_model=reward_model,
                         train_dataset=dataset, value_model=value_model)

    stamps: list[float] = []
    eos_tokens: list[float] = []
    phases: list[dict] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, *a, **k):
            stamps.append(time.perf_counter())
            phase.clear()

        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())
            phases.append(dict(phase))
            phase.clear()

        def on_log(self, args_, state, control, logs=None, **k):
            if logs and "val/num_eos_tokens" in logs:
                eos_tokens.append(logs["val/num_eos_tokens"])

    trainer.add_callback(Stamp())
    # disable_tqdm=True put a PrinterCallback there, which prints every step's metrics; red
    # prints nothing per iteration in this benchmark (logger.progress_bar=false).
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)

    gc_frozen = 0
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
        gc_frozen = gc.get_freeze_count()

    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    shutil.rmtree(out_dir, ignore_errors=True)

    its = [b - a for a, b in zip(stamps, stamps[1:])]
    # The gc.collect() at the end of iteration i runs after its on_step_end: it is counted
    # in iteration i + 1 (every iteration but the first pays one end-of-iteration collect).
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    record = {
        "side": "trl-gc-frozen" if args.gc_freeze else "trl",
        "iteration_s": its,
        "phases": phases,
        "phase_calls": dict(calls),
        "total_s": total,
        "eos_tokens_per_iteration": eos_tokens,
        "gc_frozen_objects": gc_frozen,
        "gc_tracked_objects": len(gc.get_objects()),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
        "threads": torch.get_num_threads(),
        "optimizer": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                          else trainer.optimizer).__name__,
        "optim": str(config.optim),
        "policy_params": n_params(policy),
        "value_params": n_params(value_model),
    }
    with open(args.out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
