"""An iteration's metrics, and where they go: metrics.jsonl (the source of truth), wandb
(offline by default), a console bar.

Only rank 0 writes. Names: `objective/*`, `ppo/*`, `rewards/*`, `time/*`, `throughput/*`
(README: "A run directory").
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import torch

from red_cli.rlhf.masking import masked_mean
from red_cli.runs import read_metrics

log = logging.getLogger("red")


def iteration_metrics(scored, credit, shaped, returns: torch.Tensor | None,
                      values: torch.Tensor | None, kl_coef: float) -> dict[str, float]:
    """This rank's numbers of one iteration, before the PPO-epoch statistics and timings.

    scored: the reward pipeline's ``Scored``; credit: the mode's ``Credit``; shaped: the
    KL-shaped rewards (``rlhf.kl.KLShapedRewards``); returns / values: the critic's targets
    and old values (None without a critic).
    """
    mask = scored.signals.response_mask
    out = {
        "objective/score": scored.raw_scores.mean().item(),
        "objective/kl": (shaped.kl * mask).sum(-1).mean().item(),
        "objective/kl_coef": kl_coef,
        "objective/response_length": mask.sum(-1).float().mean().item(),
        "objective/eos_fraction": scored.has_eos.float().mean().item(),
        "rewards/sum_minus_score": (credit.rewards.sum(-1) - credit.target).abs().max().item(),
        "rewards/mean_total": (shaped.rewards * mask).sum(-1).mean().item(),
        "rewards/shaped_score": scored.signals.scores.mean().item(),
    }
    if returns is not None:
        out["ppo/returns/mean"] = masked_mean(returns, mask).item()
        out["ppo/val/mean"] = masked_mean(values, mask).item()
    return out


class MetricsLogger:
    """Append one JSON line per iteration; mirror to wandb and a tqdm bar."""

    def __init__(self, run_dir: Path, config: dict, *, enabled: bool, wandb_mode: str,
                 project: str, entity: str | None, tags: list[str], progress_bar: bool,
                 total: int, start: int = 0, group: str | None = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._wandb = None
        self._bar = None
        if not enabled:
            return
        # A resumed run forgets iterations logged after its last checkpoint: they are redone.
        kept = [m for m in read_metrics(self.path) if m["iteration"] < start]
        self.path.write_text("".join(json.dumps(m) + "\n" for m in kept))
        if wandb_mode != "disabled":
            self._wandb = self._start_wandb(run_dir, config, wandb_mode, project, entity, tags,
                                            group)
        if progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc="ppo", unit="it", dynamic_ncols=True)

    @staticmethod
    def _start_wandb(run_dir, config, mode, project, entity, tags, group):
        import wandb

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(project=project, entity=entity, tags=list(tags), config=config,
                          dir=str(run_dir), mode=mode, id=run_id, resume="allow", group=group,
                          name=run_dir.name, settings=wandb.Settings(console="off"))

    def log(self, iteration: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"iteration": iteration, **{k: float(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(values, step=iteration)
        if self._bar is not None:
            post = {"score": values.get("objective/score"), "kl": values.get("objective/kl"),
                    "gold": values.get("objective/gold")}
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in post.items() if v is not None})
            self._bar.update(1)
        else:
            shown = ("objective/score", "objective/kl", "objective/gold", "ppo/loss/policy")
            log.info("iter %d  %s", iteration,
                     "  ".join(f"{k.split('/')[-1]}={values[k]:.4f}" for k in shown if k in values))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()


def plot_curves(metrics: list[dict], path: Path, title: str = "") -> None:
    """score, gold, KL and losses against iteration, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("objective/score", "RM score"), ("objective/gold", "gold score"),
              ("objective/kl", "KL (sum over tokens)"), ("ppo/loss/policy", "policy loss"),
              ("ppo/loss/value", "value loss")]
    panels = [(k, t) for k, t in panels if any(k in m for m in metrics)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        xs = [m["iteration"] for m in metrics if key in m]
        ax.plot(xs, [m[key] for m in metrics if key in m], lw=1.5)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
