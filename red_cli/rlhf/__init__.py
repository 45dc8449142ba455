"""Pure tensor math for RLHF: masking, reward redistribution, KL shaping, GAE and PPO losses.

Every module here imports torch only, so the math can be unit-tested without models,
DeepSpeed or Hydra. Import the submodules directly (``from red_cli.rlhf import gae``);
nothing is re-exported here.

Shape notation in the docstrings: b batch, T response length, V vocabulary size.
``response_mask`` is True on real response tokens (through EOS) and False on padding.
"""
