"""How many threads a visec process computes with, and what it records about them.

Two visec processes on a 2-core machine used to slow each other down up to 30 times. Two causes, both
fixed here rather than left to the user's environment variables:

* **OpenMP busy-waiting.** PyTorch's CPU kernels run on GNU OpenMP, whose idle threads spin
  300,000 times before they sleep. Beside another process that wants the same cores, the spinning
  threads burn the time the other process's threads need, and every parallel region waits for a
  thread that is not running: two resnet18 trainings at 2 threads each took 102.7 s side by side
  against 8.2 s alone (12.5x). ``visec/__init__.py`` sets ``GOMP_SPINCOUNT=10000`` before torch is
  imported, unless the user set a spin count or a wait policy: the same pair then took 16.2 s
  (2.0x, the proportional share) and one alone 7.9 s. A fully passive policy
  (``OMP_WAIT_POLICY=PASSIVE``) costs 15-20 % alone on small convolutions, so it is not the default.
* **Oversubscription.** Every process took one thread per core. :func:`configure_threads` counts the
  cores this process may run on (its CPU affinity mask, which also reflects ``taskset`` and most
  cluster schedulers) and subtracts the cores other processes kept busy over a short sample of
  ``/proc/stat``, so a second process starts with the cores that are actually free; while it
  trains, :func:`retune_threads` repeats the count every few seconds (two processes started at the
  same moment both see an idle machine at first), and takes cores back when the other ends.

Precedence: ``train.threads`` in the config, then ``VISEC_THREADS`` (a count, or ``off``: leave
torch's count as the script set it, which the test suite uses), then ``OMP_NUM_THREADS`` (torch
already follows it), then the free cores. The count used is written on every card (``runtime``),
since the thread count changes floating-point results.

Core layer: the standard library at import time; torch only inside the functions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

GOMP_SPINCOUNT = "10000"  # spins before an idle OpenMP thread sleeps (GNU default 300000)
SAMPLE_SECONDS = 0.1  # how long /proc/stat is sampled to see what other processes use
RETUNE_SECONDS = 5.0  # how often a training or evaluation looks at the other processes' load again


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where that is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpu_jiffies(cpus: list[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over ``cpus``, from ``/proc/stat``; ``None`` off Linux."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    busy = total = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            values = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return (busy, total) if total else None


def _snapshot(cpus: list[int]) -> tuple[tuple[int, int] | None, float, float]:
    """(machine busy/total ticks on ``cpus``, this process's CPU seconds, monotonic time)."""
    own = os.times()
    return _cpu_jiffies(cpus), own.user + own.system, time.monotonic()


def _others(first: tuple, second: tuple, n_cpus: int) -> float:
    """Cores other processes kept busy between two :func:`_snapshot` s (0 when unknown)."""
    (j0, own0, t0), (j1, own1, t1) = first, second
    if j0 is None or j1 is None or j1[1] <= j0[1] or t1 <= t0:
        return 0.0
    share = (j1[0] - j0[0]) / (j1[1] - j0[1])  # busy fraction of those CPUs
    return max(0.0, share * n_cpus - (own1 - own0) / (t1 - t0))


def busy_cores(cpus: list[int] | None = None, seconds: float = SAMPLE_SECONDS) -> float:
    """Cores of ``cpus`` that *other* processes kept busy over a ``seconds`` sample (0 when unknown).

    The whole machine's busy ticks on those CPUs minus this process's own CPU time in the window.
    """
    cpus = cpus if cpus is not None else allowed_cpus()
    first = _snapshot(cpus)
    if first[0] is None:
        return 0.0
    time.sleep(seconds)
    return _others(first, _snapshot(cpus), len(cpus))


def _free(cpus: list[int], others: float) -> int:
    return max(1, min(len(cpus), round(len(cpus) - others)))


def free_cores() -> int:
    """Cores this process may use that other processes leave free (at least one)."""
    cpus = allowed_cpus()
    return _free(cpus, busy_cores(cpus))


_CHOSEN: dict[str, Any] = {}


def configure_threads(requested: int | None = None) -> dict[str, Any]:
    """Set torch's intra-op thread count by the precedence above; returns ``{"threads", "source"}``.

    Called when an :class:`~visec.engine.Engine` is created; in the automatic mode the engine also
    calls :func:`retune_threads` while it trains and evaluates. OpenCV gets one thread, since its
    per-image work in the data loader is too small to share and its own pool would compete with
    torch's.
    """
    import torch

    if requested is not None:
        n, source = int(requested), "train.threads"
    elif os.environ.get("VISEC_THREADS", "").strip().lower() == "off":
        n, source = torch.get_num_threads(), "VISEC_THREADS=off (left as set)"
    elif os.environ.get("VISEC_THREADS", "").strip():
        n, source = _positive(os.environ["VISEC_THREADS"], "VISEC_THREADS"), "VISEC_THREADS"
    elif os.environ.get("OMP_NUM_THREADS", "").strip():
        n, source = torch.get_num_threads(), "OMP_NUM_THREADS"
    else:
        cpus = allowed_cpus()
        last = _CHOSEN.get("snap")
        now = _snapshot(cpus)
        if last is not None and now[2] - last[2] >= SAMPLE_SECONDS:
            others = _others(last, now, len(cpus))  # since the last look: no need to wait
        else:
            others = busy_cores(cpus)
            now = _snapshot(cpus)
        n, source = _free(cpus, others), f"free cores of {len(cpus)}"
        _CHOSEN.update(snap=now)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass
    _CHOSEN.update(threads=n, source=source, auto=source.startswith("free"))
    _CHOSEN.setdefault("used", set()).add(n)
    return {"threads": n, "source": source}


def retune_threads(interval: float = RETUNE_SECONDS) -> int | None:
    """In the automatic mode, at most every ``interval`` seconds: choose the thread count again
    from what other processes used since the last look (no waiting); returns the new count when
    it changed. A process started beside another one thus settles on its share, and takes the
    cores back when the other finishes."""
    if not _CHOSEN.get("auto"):
        return None
    last = _CHOSEN.get("snap")
    if last is not None and time.monotonic() - last[2] < interval:
        return None  # called at every batch: nothing but this check until the interval is up
    cpus = allowed_cpus()
    now = _snapshot(cpus)
    _CHOSEN["snap"] = now
    if last is None:
        return None
    import torch

    n = _free(cpus, _others(last, now, len(cpus)))
    if n == torch.get_num_threads():
        return None
    torch.set_num_threads(n)
    _CHOSEN["threads"] = n
    _CHOSEN["used"].add(n)
    return n


def _positive(value: str, name: str) -> int:
    from visec.errors import ConfigError

    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{name}={value!r}: expected a positive whole number of threads")
    return n


def runtime_info(train: Any = None) -> dict[str, Any]:
    """What changes the numbers besides the seed: threads now (and how they were chosen), the
    OpenMP spin settings, torch's version and build, oneDNN's instruction-set cap, and, given a
    :class:`~visec.config.TrainConfig`, its precision and layout (``channels_last``)."""
    info: dict[str, Any] = {}
    try:
        import torch

        info.update(threads=torch.get_num_threads(), torch=torch.__version__)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if _CHOSEN:
        info["threads_source"] = _CHOSEN["source"]
        if len(_CHOSEN.get("used", ())) > 1:  # the automatic choice changed with the machine's load
            info["threads_used"] = sorted(_CHOSEN["used"])
    info["omp"] = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        info["onednn_max_cpu_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    if train is not None:
        info.update(precision=train.precision, channels_last=train.channels_last)
    return info


def check_device(text: str, name: str = "device") -> str:
    """``text`` when it names a torch device this machine has (``cpu``, ``cuda``, ``cuda:N``,
    ``mps``), else a one-line :class:`~visec.errors.ConfigError` naming ``name``: an unknown name, a
    GPU index this machine lacks or a GPU where none is usable are refused before any work starts,
    in visec's words rather than torch's."""
    import torch

    from visec.errors import ConfigError

    try:
        dev = torch.device(str(text).strip())
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{name} '{text}' is not a device: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return str(dev)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{name} '{text}': no CUDA GPU is usable here (use cpu)")
        if dev.index is not None and not 0 <= dev.index < count:
            raise ConfigError(f"{name} '{text}': this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return str(dev)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{name} '{text}': no Apple MPS device is usable here (use cpu)")
        return str(dev)
    raise ConfigError(f"{name} '{text}': visec runs on cpu, cuda, cuda:N or mps, not {dev.type}")


def check_accelerator(accelerator: str, devices: int | str) -> None:
    """Refuse, in one line naming ``train.accelerator`` or ``train.devices``, hardware settings this
    machine cannot honour (a GPU accelerator without a usable GPU, more GPUs than it has), before
    Lightning refuses them with a traceback. ``auto`` always passes; on the CPU any number of
    devices (processes) is fine."""
    import torch

    from visec.errors import ConfigError

    if accelerator in ("gpu", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        mps = getattr(torch.backends, "mps", None)
        if count == 0 and not (accelerator == "gpu" and mps is not None and mps.is_available()):
            raise ConfigError(f"train.accelerator={accelerator}: no usable GPU on this machine; "
                              f"set train.accelerator=cpu (or auto)")
        if isinstance(devices, int) and count and devices > count:
            raise ConfigError(f"train.devices={devices}: this machine has {count} GPU(s)")
    elif accelerator == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("train.accelerator=mps: no Apple MPS device on this machine; "
                              "set train.accelerator=cpu (or auto)")
        if isinstance(devices, int) and devices > 1:
            raise ConfigError(f"train.devices={devices}: an MPS machine has one device")
