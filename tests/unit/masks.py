"""Random response masks shared by the rlhf unit tests (not a test module)."""

import torch


def random_masks(b: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """Contiguous [b, T] masks: row 0 all False, row 1 all True, row 2 left-aligned with
    padding at the end, row 3 starting later; the rest random (start 0 half the time)."""
    positions = torch.arange(T)
    start = torch.randint(0, T + 1, (b,), generator=generator)
    start = torch.where(torch.rand(b, generator=generator) < 0.5, 0, start)
    length = torch.randint(0, T + 1, (b,), generator=generator)
    start[:4] = torch.tensor([0, 0, 0, min(1, T - 1)])
    length[:4] = torch.tensor([0, T, max(T - 1, 1), T])
    return (positions >= start[:, None]) & (positions < (start + length)[:, None])
