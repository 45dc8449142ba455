"""The smoke tests' fixtures (one tiny toy world per session), with DeepSpeed on CUDA.

The smoke tests' session set-up (``tests.smoke.conftest.red_env``) sets DS_ACCELERATOR=cpu
unless it is set: the smoke tests train on CPU, and DeepSpeed picks its accelerator once, when
it is first imported. Under it a GPU test's DeepSpeed would be a CPU one while its tensors
live on the GPU (NCCL then broadcasts CPU tensors and fails). So the GPU tests use it under
another name and override ``red_env``: the smoke set-up runs first (RED_CACHE, offline hub,
wandb off), then DS_ACCELERATOR is set to cuda before any GPU test imports DeepSpeed
(they import red_cli.train inside the test). ``tiny_toy`` asks for ``red_env`` by name, so in
this folder it gets this one. The default run (``pytest -q``: ``-m 'not slow and not gpu'``)
deselects the GPU tests, so none of this runs there; run them in a process of their own,
``pytest -m gpu``, since a process that already imported DeepSpeed for CPU keeps it.
"""

from __future__ import annotations

import os

import pytest

from tests.smoke.conftest import red_env as smoke_red_env  # noqa: F401  (shared set-up)
from tests.smoke.conftest import tiny_toy  # noqa: F401  (shared fixture)


@pytest.fixture(scope="session", autouse=True)
def red_env(smoke_red_env):  # noqa: F811
    import torch

    before = os.environ.get("DS_ACCELERATOR")
    if torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cuda"
    yield
    if before is None:
        os.environ.pop("DS_ACCELERATOR", None)
    else:
        os.environ["DS_ACCELERATOR"] = before
