"""DeepSpeed glue: process setup, engine config, rank launch, reductions, checkpoint I/O.

One process runs in-process as a DeepSpeed world of size 1 (CPU: gloo). Several ranks are
started by :func:`launch_ranks` on the config frozen in the run directory, so no rank
re-resolves `${now:...}` or makes a run directory of its own.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from red_cli import runs, runtime

log = logging.getLogger("red")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> DistInfo:
    """Initialise torch.distributed through DeepSpeed; a lone process becomes a world of one."""
    kind = runtime.prepare_env(device)
    runtime.quiet_libraries()
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    if kind == "cpu" and not _shm_op_built() and int(os.environ.get("RANK", "0")) == 0:
        log.info("red: the first run on this machine compiles DeepSpeed's CPU communication op "
                 "(about a minute, once; cached in %s)", _extensions_dir())
    with runtime.quiet_native_output("DeepSpeed's set-up"):
        import deepspeed

        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo" if kind == "cpu" else "nccl",
                                       verbose=False)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return DistInfo(rank, local_rank, world, dev)


def _extensions_dir() -> Path:
    """Where torch keeps compiled extensions (DeepSpeed's ops among them)."""
    default = Path.home() / ".cache" / "torch_extensions"
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or default)


def _shm_op_built() -> bool:
    return any(_extensions_dir().rglob("deepspeed_shm_comm*.so"))


def teardown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def ds_config(*, micro_batch: int, grad_accum: int, max_grad_norm: float, zero_stage: int,
              offload_optimizer: bool, offload_param: bool, precision: str) -> dict:
    """The DeepSpeed config dict for one trained model (policy or critic)."""
    zero: dict = {"stage": zero_stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if offload_param and zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if zero_stage == 3:
        # The final policy is saved whole, gathered from every rank's partition.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if offload_optimizer:
        # Our torch AdamW steps on the CPU copy; DeepSpeed otherwise refuses any optimizer
        # but its compiled CPUAdam (faster there, but a C++ build on first use).
        cfg["zero_force_ds_cpu_optimizer"] = False
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return cfg


def lr_lambda(kind: str, warmup: int, total: int):
    """Learning-rate multiplier per optimiser step: linear warmup, then constant/linear/cosine."""
    import math

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if kind == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def init_engine(model: torch.nn.Module, *, lr: float, weight_decay: float, betas,
                scheduler: str, warmup_steps: int, total_steps: int, config: dict):
    """A DeepSpeed engine around ``model`` with a torch AdamW (no op compilation on CPU)."""
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for the whole step, on CPU as on GPU (docs/PERFORMANCE.md: the step
    # takes 0.25-0.36x of foreach's time on CPU; torch picks neither by itself on CPU).
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                                  fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(scheduler, warmup_steps, total_steps))
    with runtime.quiet_native_output("DeepSpeed's engine set-up"):
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=sched,
                                          config=config, dist_init_required=False)
    if engine.zero_optimization_stage() == 0 and engine.dp_world_size == 1:
        # Alone, the gradient all-reduce is an identity that still flattens every gradient
        # into buckets and copies them back after each backward (6-9% of the toy's update).
        engine.enable_backward_allreduce = False
    return engine


def gathered_for_generation(engine):
    """A context in which ``engine.module`` holds its full weights (ZeRO-3 only; else a no-op).

    Under ZeRO-3 every forward gathers each layer's weights from all ranks and frees them
    again, which `generate` would do once per token, and ranks whose responses end early
    would stop joining those gathers and hang the others. Gathered once for the whole rollout
    (and DeepSpeed's hooks off meanwhile), generation costs one all-gather and no rank waits.
    """
    import contextlib

    if engine.zero_optimization_stage() != 3:
        return contextlib.nullcontext(engine)
    from deepspeed.runtime.zero import unwrap_model_for_generation

    return unwrap_model_for_generation(engine)


def parameter_checksum(engine) -> float:
    """A float64 sum of |w| and w over this rank's full parameters (gathered under ZeRO-3)."""
    import contextlib

    import deepspeed

    total = 0.0
    for param in engine.module.parameters():
        # Only ZeRO-3 partitions parameters (they carry ds_tensor); gather each one to read it.
        gather = (deepspeed.zero.GatheredParameters([param]) if hasattr(param, "ds_tensor")
                  else contextlib.nullcontext())
        with gather:
            data = param.data.double()
            total += (data.abs().sum() + data.sum()).item()
    return total


def non_finite_weights(engines: dict, dist: DistInfo) -> str | None:
    """The name of an engine whose weights (this rank's share of them) hold a NaN or
    infinity on any rank, or None: checked before a checkpoint is written."""
    found = None
    for name, engine in engines.items():
        for param in engine.module.parameters():
            data = param.ds_tensor if hasattr(param, "ds_tensor") else param.data
            if data.numel() and not bool(torch.isfinite(data).all()):
                found = name
                break
        if found:
            break
    return next((n for n in runtime.gather_objects(found, dist.world_size) if n), None)


def check_ranks_in_sync(engines: dict, dist: DistInfo) -> dict[str, list[float]]:
    """Every rank's parameter checksum per engine; raises if the ranks disagree."""
    sums = {name: runtime.gather_objects(parameter_checksum(e), dist.world_size) for name, e in engines.items()}
    for name, values in sums.items():
        if max(values) - min(values) > 1e-9 * max(1.0, abs(values[0])):
            raise RuntimeError(f"ranks hold different {name} parameters at the end: {values}")
    return sums


# ---------------------------------------------------------------- seeds and RNG state

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(ckpt_root: Path, iteration: int, engines: dict, trainer_state: dict,
                    dist: DistInfo, keep: int = 2, rng: dict | None = None) -> Path:
    """Write engines + trainer state + every rank's RNG into ``iter_N`` atomically.

    Everything goes to ``iter_N.tmp`` first and is fsync'd; rank 0 renames it and then
    rewrites the ``latest`` pointer (temp file, fsync, rename), so a kill or a power cut at any
    moment leaves either the old or the new checkpoint as ``latest``, never a half-written
    one. ``rng``: the RNG state to record (default: this rank's current one).
    """
    final = ckpt_root / f"iter_{iteration}"
    tmp = ckpt_root / f"iter_{iteration}.tmp"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    runtime.barrier(dist.world_size)
    try:
        for name, engine in engines.items():
            # Frozen weights (the base model under LoRA) never change: the model load
            # restores them.
            engine.save_checkpoint(str(tmp), tag=name, save_latest=False,
                                   exclude_frozen_parameters=has_frozen_parameters(engine))
        torch.save(rng if rng is not None else rng_state(), tmp / f"rng_rank{dist.rank}.pt")
        if dist.is_main:
            torch.save(trainer_state, tmp / "trainer_state.pt")
        _fsync_tree(tmp, mine=f"rng_rank{dist.rank}.pt")
    except (OSError, RuntimeError) as err:
        # torch.save reports a full disk as a RuntimeError of its zip writer; say what it is,
        # and take the half-written checkpoint away (`latest` still names the previous one).
        full = getattr(err, "errno", None) == errno.ENOSPC or \
            shutil.disk_usage(ckpt_root).free < 1 << 20
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device while writing the checkpoint "
                          f"of iteration {iteration}", str(ckpt_root)) from err
        raise
    runtime.barrier(dist.world_size)
    if dist.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        runs.fsync_path(ckpt_root)
        runs.write_atomic(ckpt_root / "latest", (final.name + "\n").encode())
        old = sorted((p for p in ckpt_root.glob("iter_*") if p.is_dir() and p.suffix != ".tmp"),
                     key=lambda p: int(p.name.split("_")[1]))
        for stale in old[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    runtime.barrier(dist.world_size)
    return final


def _fsync_tree(root: Path, mine: str) -> None:
    """fsync what this rank wrote under ``root`` (rank 0: everything, the others: their RNG
    file; DeepSpeed's per-rank shards are flushed by the rank 0 walk, which sees them on a
    shared file system), then the directories."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and (_is_main_rank() or path.name == mine):
            runs.fsync_path(path)
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        runs.fsync_path(path)
    runs.fsync_path(root)


def _is_main_rank() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def has_frozen_parameters(engine) -> bool:
    return any(not p.requires_grad for p in engine.module.parameters())


def load_checkpoint(ckpt_root: Path, engines: dict, dist: DistInfo) -> dict:
    """Restore engines (weights, optimiser, scheduler) and this rank's RNG; return trainer state."""
    tag_dir = ckpt_root / (ckpt_root / "latest").read_text().strip()
    for name, engine in engines.items():
        path, _ = engine.load_checkpoint(str(tag_dir), tag=name,
                                         load_module_strict=not has_frozen_parameters(engine))
        if path is None:
            raise RuntimeError(f"could not load the {name} checkpoint from {tag_dir}")
    rng_file = tag_dir / f"rng_rank{dist.rank}.pt"
    if not rng_file.exists():
        raise RuntimeError(f"{rng_file} is missing: was the run saved with a different number of ranks?")
    state = torch.load(tag_dir / "trainer_state.pt", weights_only=False)
    set_rng_state(torch.load(rng_file, weights_only=False))
    return state


def gathered_state_dict(module: torch.nn.Module, dist: DistInfo,
                        trainable_only: bool = False) -> dict | None:
    """A ZeRO-3 model's full state dict on rank 0 (None elsewhere), one parameter gathered at a
    time (DeepSpeed's public GatheredParameters), so no rank holds more than one whole
    parameter beyond its shard. A collective: every rank must call it."""
    import deepspeed

    state: dict = {}
    for name, param in module.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if dist.is_main:
                state[name] = param.data.detach().to("cpu", copy=True)
    if not trainable_only:
        for name, buffer in module.named_buffers():
            if dist.is_main:
                state[name] = buffer.detach().to("cpu", copy=True)
    return state if dist.is_main else None


def save_final_policy(engine, tokenizer, ckpt_root: Path, dist: DistInfo, load_start) -> None:
    """The trained policy as a plain Hugging Face folder, `final_policy` (`from_pretrained`
    loads it). With LoRA the adapters alone go to `final_adapter` too, and `final_policy` is
    the starting policy (``load_start()``, on the CPU) with them merged in."""
    from red_cli import models

    lora = models.is_lora(engine.module)
    state = None
    if engine.zero_optimization_stage() == 3:
        # With LoRA only the adapters: the frozen base is read from disk below.
        state = gathered_state_dict(engine.module, dist, trainable_only=lora)
    if dist.is_main:
        path = ckpt_root / "final_policy"
        path.mkdir(parents=True, exist_ok=True)
        if lora:
            adapter = ckpt_root / "final_adapter"
            engine.module.save_pretrained(adapter, state_dict=state, safe_serialization=True)
            merged = models.merged_lora_policy(load_start(), adapter)
            merged.save_pretrained(path, safe_serialization=True)
        else:
            engine.module.save_pretrained(path, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(path)
    runtime.barrier(dist.world_size)


# ---------------------------------------------------------------- launching ranks

def launch_ranks(run_dir: Path, launcher, resume: bool = False) -> None:
    """Start ``nproc_per_node`` ranks of `red_cli.train.worker` on the frozen
    ``run_dir/config.yaml`` and wait for them.

    The ranks run in a session of their own, so the terminal's Ctrl-C reaches only this
    process: the first one asks the ranks (through ``run_dir/STOP``) to finish the iteration
    and checkpoint, a second one, SIGTERM or SIGHUP stops them at once. They also stop when
    this process dies, even by SIGKILL (a parent-death signal). When a rank dies before it
    could say so, run.json is marked failed here.
    """
    import signal

    from red_cli.errors import Interrupted, UserError

    port = launcher.master_port or free_port()
    worker_args = ["--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    if launcher.backend == "deepspeed":
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--no_local_rank",
               "--master_port", str(port), "--master_addr", launcher.master_addr]
        if launcher.hostfile:
            cmd += ["--hostfile", launcher.hostfile, "--num_nodes", str(launcher.nnodes)]
        cmd += ["--num_gpus", str(launcher.nproc_per_node), "--module", "red_cli.train.worker",
                *worker_args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run",
               f"--nproc_per_node={launcher.nproc_per_node}", f"--nnodes={launcher.nnodes}",
               f"--node_rank={launcher.node_rank}", f"--master_addr={launcher.master_addr}",
               f"--master_port={port}", "-m", "red_cli.train.worker", *worker_args]
    log.info("launching %d ranks: %s", launcher.nproc_per_node * launcher.nnodes, " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, runtime.cpus_available() // launcher.nproc_per_node)))
    stop_file = run_dir / "STOP"
    stop_file.unlink(missing_ok=True)
    env["RED_STOP_FILE"] = str(stop_file)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=runtime.die_with_parent)
    asked = []

    def on_signal(signum, frame):
        if signum == signal.SIGINT and not asked:
            asked.append(signum)
            stop_file.touch()
            log.warning("red: asking the ranks to stop after this iteration (a checkpoint "
                        "follows); interrupt again to stop at once")
            return
        asked.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_file.unlink(missing_ok=True)
    if code == 0:
        return
    info = runs.read_run_json(run_dir)
    if info.get("status") == "running":
        why = ("stopped at once by a signal" if asked else
               f"a rank exited with status {code} before it could record why (killed, out of "
               "memory, or crashed; the log above and train.log say more)")
        runs.write_status(run_dir, "interrupted" if asked else "failed", error=why)
        info = runs.read_run_json(run_dir)
    if info.get("status") == "interrupted":
        if len(asked) > 1 or (asked and asked[0] != signal.SIGINT):
            raise KeyboardInterrupt(info.get("error", "stopped"))
        raise Interrupted(info.get("error", "interrupted"))
    raise UserError(f"the ranks stopped: {info.get('error', f'exit status {code}')}")
