"""How different are the modes' advantages at the first PPO iteration? (docs/RESULTS.md)

    python scripts/credit_at_init.py                 # toy world, 8 rollouts of 64, ~1 min

With a critic initialised from the reward model, V(s_t) is the RM's own prefix score
R(x, y<t), which is the potential td's rewards are differences of. So with the sparse reward
GAE's TD errors are already (nearly) td's per-token rewards, and dense credit has little
left to add. This script measures it: for the toy SFT policy (reference = policy, so the KL
term is 0 at the first iteration), it samples rollouts and computes the whitened GAE
advantages that `red train` would compute for each mode and each critic initialisation
(`reward_model`: the RM's backbone and head; `policy`: the policy's backbone with the zero
head `red` starts it with, so V = 0), then prints, over all real response tokens:
  corr    Pearson correlation with the advantages of sparse + RM critic
  sign    fraction of tokens whose advantage has the same sign as sparse + RM critic's
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from red_cli import models  # noqa: E402
from red_cli.config.schema import RewardModelConfig  # noqa: E402
from red_cli.data import PromptStream, load_prompts  # noqa: E402
from red_cli.generation import Sampling  # noqa: E402
from red_cli.generation.hf import HFGenerator  # noqa: E402
from red_cli.modes import registry  # noqa: E402
from red_cli.reward.pipeline import RewardPipeline  # noqa: E402
from red_cli.reward.shaping import ScoreShaper  # noqa: E402
from red_cli.reward.stack import RewardStack  # noqa: E402
from red_cli.rlhf.gae import compute_gae  # noqa: E402
from red_cli.rlhf.masking import masked_whiten  # noqa: E402
from red_cli.toy import resolve_path  # noqa: E402
from red_cli.train.forwards import values_of  # noqa: E402

# The order of the table's rows.
MODES = {name: registry()[name] for name in ("sparse", "td", "abc", "uniform")}


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    tok = models.load_tokenizer(resolve_path("toy:policy"))
    policy = models.load_policy(resolve_path("toy:policy")).eval()
    rm = models.load_reward_model(resolve_path("toy:rm"))
    critics = {init: models.build_critic(init, rm, policy, True, True)[0].eval()
               for init in ("reward_model", "policy")}
    rm_cfg = RewardModelConfig(name="toy", path="toy:rm", max_length=256)
    pipes = {m: RewardPipeline(RewardStack(rm_cfg, rm, tok), tok, mode.needs)
             for m, mode in MODES.items()}
    generator = HFGenerator(tok, Sampling(args.max_new_tokens))
    stream = PromptStream(load_prompts("toy:prompts_train", "train", "prompt"), tok,
                          global_batch=args.batch_size, rank=0, world_size=1, seed=args.seed,
                          max_prompt_length=16)
    adv: dict[tuple[str, str], list[torch.Tensor]] = {}
    for _ in range(args.batches):
        b = stream.next_batch()
        traj = generator.generate(policy, b.texts, b.input_ids, b.attention_mask)
        mask = traj.response_mask
        values = {init: values_of(c, traj, args.batch_size) for init, c in critics.items()}
        for mode, pipe in pipes.items():
            signals = pipe(traj, ScoreShaper("none", None, None), 1).signals
            rewards = MODES[mode].apply(signals, MODES[mode].knobs()).rewards
            for init, v in values.items():
                a, _ = compute_gae(rewards, v, mask, 1.0, 0.95)
                adv.setdefault((mode, init), []).append(masked_whiten(a, mask)[mask])
    flat = {k: torch.cat(v) for k, v in adv.items()}
    ref = flat[("sparse", "reward_model")]
    print(f"{sum(len(v) for v in adv[('sparse', 'reward_model')])} response tokens, "
          f"{args.batches} x {args.batch_size} rollouts of the toy SFT policy\n")
    print("| mode | critic init | corr with sparse + RM critic | same sign |")
    print("|---|---|---|---|")
    for (mode, init), a in flat.items():
        corr = torch.corrcoef(torch.stack([a, ref]))[0, 1].item()
        sign = ((a > 0) == (ref > 0)).float().mean().item()
        print(f"| {mode} | {init} | {corr:.3f} | {sign:.3f} |")


if __name__ == "__main__":
    main()
