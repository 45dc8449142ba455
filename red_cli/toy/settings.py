"""Every size, step count and seed of the embedded toy task's build (see `build.ensure_toy`).

A pure dataclass (no logic) so that it can sit in Hydra's ConfigStore as the `toy` node;
conf/toy/default.yaml mirrors these defaults. Any change to a field changes the cache key,
so a different setting builds (and caches) a different toy world.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ToyConfig:
    seed: int = 0

    # Corpus: generated reviews, split by review into SFT / validation / prompt sources.
    n_reviews: int = 30000  # distinct reviews in total
    n_val_reviews: int = 1000  # held out: policy perplexity, held-out RM pairs
    n_prompt_reviews: int = 6000  # held out: prompts are cut from these
    prompt_min_words: int = 2
    prompt_max_words: int = 6
    n_eval_prompts: int = 300  # the other distinct prompts are the train prompts
    max_new_tokens: int = 24
    # Sentences ("units") per review, drawn uniformly in [min_units, max_units] (the default
    # [1, 3] draws 1, 2, 3 with weights 0.5, 0.4, 0.1), and the most words a review may have.
    # The long-horizon world (conf/toy/long.yaml) writes reviews of 5-8 sentences.
    min_units: int = 1
    max_units: int = 3
    max_review_words: int = 20

    # Tokenizers: byte-level BPE for the policy and the `toy` / `toy_bidir` RMs;
    # WordPiece with another vocabulary for `toy_xtok`.
    vocab_size: int = 1024
    xtok_vocab_size: int = 256

    # SFT policy: tiny GPT-2 trained as an LM on bos + review + eos.
    policy_n_embd: int = 128
    policy_n_layer: int = 2
    policy_n_head: int = 4
    policy_n_positions: int = 128
    sft_steps: int = 300
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    sft_warmup_steps: int = 30

    # Reward-model data: groups of rm_group_size continuations of one prompt, trained with
    # the Bradley-Terry loss on every pair of a group.
    rm_group_size: int = 4
    rm_corpus_groups: int = 6000  # same-prefix groups of generated reviews
    rm_sft_prompts: int = 1500  # train prompts sampled rm_group_size times by the policy
    rm_groups_per_step: int = 16
    rm_corpus_only_steps: int = 300  # (at most half the steps) then half corpus groups,
    # half policy-sample groups
    rm_warmup_steps: int = 30
    rm_center_coef: float = 0.01  # (mean score of a group)^2 penalty: scores centred on 0
    label_noise: float = 0.0  # probability of flipping each training preference
    # `toy`: GPT-2 initialised from the SFT policy (same size and tokenizer).
    rm_toy_steps: int = 500
    rm_toy_lr: float = 1e-3
    # `toy_xtok` (GPT-2, WordPiece) and `toy_bidir` (BERT, BPE): trained from scratch.
    rm_n_embd: int = 64
    rm_n_layer: int = 2
    rm_n_head: int = 4
    rm_n_positions: int = 128
    rm_steps: int = 800
    rm_lr: float = 3e-3

    # Cost model `toy:cost_model` (conf/toy/safe.yaml): GPT-2 initialised from the SFT policy
    # like `toy`, fitted (MSE) to the gold cost of red_cli/toy/cost.py. 0 steps: none.
    cost_model_steps: int = 0
    cost_model_lr: float = 1e-3
    cost_model_batch_size: int = 64  # texts per step: half corpus reviews, half policy samples

    # Evaluation (held-out prompts and reviews only).
    eval_samples_per_prompt: int = 4  # policy samples per eval prompt; every pair counts
    eval_corpus_pairs: int = 1000  # same-prefix pairs of held-out reviews
    eval_margin: float = 0.1  # a held-out pair counts when |gold_a - gold_b| >= this
    sample_batch_size: int = 256

    # Compute: torch threads per process, and processes: with 2, `toy_xtok` and `toy_bidir`
    # train in a second process while this one trains `toy` (one core each).
    num_threads: int = 1
    num_processes: int = 2
