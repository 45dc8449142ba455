"""The process a verb runs in: which device, DeepSpeed's accelerator, quiet libraries, and
the few torch.distributed collectives shared by training and the reward pipeline.

Called before anything imports deepspeed (it picks its accelerator at import time) by every
verb that loads a model: `red train`, `red eval`, `red explain`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator

import torch

from red_cli.errors import ConfigError


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device is visible; use device=cpu or device=auto")
    return device


def prepare_env(device: str) -> str:
    """Call before anything imports deepspeed: it picks its accelerator at import time."""
    kind = pick_device(device)
    if kind == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return kind


def quiet_libraries() -> None:
    """Per-file download/loading bars of transformers and datasets drown the training bar."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # Raised from inside DeepSpeed's and peft's own calls (ZeRO-3 collectives, LoRA on GPT-2's
    # Conv1D), once per step: nothing a user can act on.
    for message in (r"`torch\.distributed\.\w+` is deprecated",
                    r"`is_gradient_checkpointing` is deprecated",
                    r"fan_in_fan_out is set to False"):
        warnings.filterwarnings("ignore", message=message)


# ---------------------------------------------------------------- collectives (no-ops alone)

def all_reduce_mean(values: dict[str, float], world_size: int) -> dict[str, float]:
    """Mean of each scalar over ranks (one collective for the whole dict)."""
    if world_size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: (t[i] / world_size).item() for i, k in enumerate(keys)}


def gather_objects(obj, world_size: int) -> list:
    if world_size == 1:
        return [obj]
    out = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


# ---------------------------------------------------------------- threads

def cpus_available() -> int:
    """CPUs this process may run on (its affinity, and a cgroup CPU quota where one is set)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


class CpuLoad:
    """How many of this process's CPUs other processes keep busy, between two samples.

    From the per-CPU lines of /proc/stat (only the CPUs this process may run on, so a
    container does not count its host's other cores), minus this process's own CPU time.
    """

    def __init__(self) -> None:
        self.cpus = (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")
                     else set(range(os.cpu_count() or 1)))
        self.last = self._sample()

    def _sample(self):
        busy = total = 0
        try:
            with open("/proc/stat") as f:
                for line in f:
                    name, *fields = line.split()
                    if not name.startswith("cpu") or name == "cpu":
                        continue
                    if int(name[3:]) not in self.cpus:
                        continue
                    values = [int(v) for v in fields]
                    idle = values[3] + (values[4] if len(values) > 4 else 0)
                    busy, total = busy + sum(values) - idle, total + sum(values)
        except (OSError, ValueError, IndexError):
            return None
        return busy, total, time.process_time(), time.perf_counter()

    def others(self) -> float:
        """CPUs kept busy by other processes since the last call (0 if unknown)."""
        now = self._sample()
        last, self.last = self.last, now
        if now is None or last is None or now[1] <= last[1] or now[3] <= last[3]:
            return 0.0
        busy = (now[0] - last[0]) / (now[1] - last[1]) * len(self.cpus)
        own = (now[2] - last[2]) / (now[3] - last[3])
        return max(0.0, busy - own)


def busy_cpus_of_others(seconds: float = 0.5) -> float:
    """How many of this process's CPUs other processes keep busy, measured over ``seconds``."""
    load = CpuLoad()
    time.sleep(seconds)
    return load.others()


def threads_for(others: float, local_ranks: int = 1) -> int:
    """This process's share of its CPUs, less those other processes keep busy. A CPU counts
    as taken when others keep it three-quarters busy: background noise (an editor, a shell)
    leaves the count alone, so runs on a quiet machine all use the same."""
    share = max(1, cpus_available() // max(1, local_ranks))
    if local_ranks > 1:
        return share
    return max(1, min(share, cpus_available() - int(others + 0.25)))


def choose_threads(requested: int, local_ranks: int = 1) -> int:
    """torch's intra-op threads for one process: ``requested`` if > 0 (or OMP_NUM_THREADS if
    the user set it), else this process's share of the CPUs minus those other processes keep
    busy right now.

    Why not always every core: torch's OpenMP threads spin while they wait for each other, so
    when another process holds one of two cores, two threads are slower than one, by 4-10x on
    the toy task (docs/PERFORMANCE.md, scripts/bench_threads.py). The count stays fixed for
    the run (and is kept on resume): results depend on it in the last bits. With
    ``threads_follow_load`` the loop re-decides it every iteration instead (:class:`CpuLoad`).
    """
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return threads_for(busy_cpus_of_others() if local_ranks == 1 else 0.0, local_ranks)


# ---------------------------------------------------------------- stopping on request

class StopRequest:
    """Ctrl-C (or SIGTERM) while training: the first one asks the loop to finish its
    iteration and checkpoint; a second one stops at once (KeyboardInterrupt).

    ``stop_file``: a file whose existence asks the same (the launcher of several ranks
    writes it, as they do not see the terminal's Ctrl-C).
    """

    def __init__(self, stop_file=None):
        self.requested = False
        self.stop_file = stop_file
        self._previous = {}

    def install(self) -> StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt("stopped at once (second interrupt)")
        self.requested = True
        logging.getLogger("red").warning(
            "red: stopping after this iteration (a checkpoint follows); interrupt again to "
            "stop at once")

    def __call__(self) -> bool:
        return self.requested or bool(self.stop_file and os.path.exists(self.stop_file))


# ---------------------------------------------------------------- logs

def log_to_file(path) -> logging.Handler:
    """Everything the process logs (warnings included) also goes to ``path``, appended."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handler


def any_rank(flag: bool, world_size: int) -> bool:
    """Whether ``flag`` is true on any rank (one small all-reduce; alone: the flag)."""
    if world_size == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def die_with_parent() -> None:
    """In a child process before it runs (``preexec_fn``): ask Linux to send it SIGTERM when
    its parent dies, so ranks never outlive the `red` that started them (a no-op elsewhere)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def quiet_native_output(what: str = "") -> Iterator[None]:
    """Hold back what C code, compilers and DeepSpeed print straight to the terminal (its op
    builds and `-laio` probes, "Setting ds_accelerator to cpu"): shown only if the block
    fails, or always with RED_VERBOSE=1. Works on the file descriptors, so a subprocess's
    output is held back too."""
    if os.environ.get("RED_VERBOSE") or not _fds_usable():
        yield
        return
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            held.seek(0)
            text = held.read().decode("utf-8", "replace")
            if failed and text.strip():
                sys.stderr.write(f"--- output held back{' during ' + what if what else ''}:\n"
                                 f"{text}")
            elif text.strip():
                logging.getLogger("red").debug("held back output%s:\n%s",
                                               f" during {what}" if what else "", text)


def _fds_usable() -> bool:
    try:
        os.fstat(1)
        os.fstat(2)
    except OSError:
        return False
    return True


def all_reduce_sum(values: list[float], world_size: int) -> list[float]:
    """Each number summed over ranks (one collective; alone: the numbers)."""
    if world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()
