"""What this machine offers for training: GPUs, CPU bfloat16 support, the precision and the devices to use.

``auto`` precision is measured, not guessed (``resnet/core/precision.py``): the hardware only says which
mixed policy is worth timing against float32 (``claimed_mixed_precision``): mixed_float16 on a GPU with
tensor cores (compute capability 7.0 or newer), mixed_bfloat16 on a CPU with AMX or AVX512-BF16
(elsewhere bfloat16 is emulated and can be many times slower than float32), none everywhere else.
``resnet.core.precision.resolve`` answers what ``auto`` uses: the remembered measurement when there is
one, else float32 where nothing is claimed or the run is shorter than one full-data epoch, else the
claimed policy, marked as not measured yet.

Devices (``TrainConfig.gpus``): ``"1"`` trains on TensorFlow's default device, the first GPU or else the
CPU; ``"all"`` trains data-parallel on every GPU when there are two or more (``tf.distribute``'s
MirroredStrategy: the model is copied to each, each batch is split evenly across them, and their
gradients are combined into the whole batch's before every update), and on the default device otherwise. ``training_placement``
decides and words it; ``training_strategy`` is the strategy a model is built and trained under.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data import quiet
from resnet.config import GPU_CHOICES, MIXED_BFLOAT16, MIXED_FLOAT16

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# The CPU features worth naming when saying where a run trains (what TensorFlow's kernels use).
SHOWN_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[str, ...]  # names of the GPUs TensorFlow sees
    gpu_compute_capability: tuple[int, int] | None  # of the first GPU
    cpu_name: str
    cpu_bf16: bool  # AMX or AVX512-BF16 present
    cpu_cores: int = 0  # cores this process may use (0: unknown)
    cpu_features: tuple[str, ...] = ()  # of SHOWN_CPU_FLAGS, those present
    cpu_flags_hash: str = ""  # of every CPU flag: tells CPUs of one model name apart (precision.py)

    @property
    def device_label(self) -> str:
        """The device as runs record it (``RunState.device``; speed estimates match on it)."""
        if self.gpus:
            return f"GPU: {self.gpus[0]}" + (f" (+{len(self.gpus) - 1} more)" if len(self.gpus) > 1 else "")
        return f"CPU: {self.cpu_name}" + (" (bfloat16 units)" if self.cpu_bf16 else "")

    @property
    def device_text(self) -> str:
        """The device label with the CPU's cores and features: "CPU: AMD EPYC, 2 cores, AVX2 FMA"."""
        if self.gpus:
            return self.device_label
        details = self.cpu_text[len(self.cpu_name) :]
        return self.device_label + details

    @property
    def cpu_text(self) -> str:
        """The CPU in words: "AMD EPYC, 2 cores, AVX2 FMA"."""
        parts = [self.cpu_name]
        if self.cpu_cores:
            parts.append(f"{self.cpu_cores} core{'s' if self.cpu_cores != 1 else ''}")
        if self.cpu_features:
            parts.append(" ".join(flag.upper() for flag in self.cpu_features))
        return ", ".join(parts)


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 0


@functools.lru_cache(maxsize=1)
def detect_hardware() -> Hardware:
    import tensorflow as tf  # here: a process that never trains (the app's page) does not import it

    # The first probe initialises CUDA, which prints "failed call to cuInit" and the like on a machine
    # without it: captured (data/quiet.py), shown only with --verbose.
    with quiet.captured("the device probe"):
        gpus = tf.config.list_physical_devices("GPU")
        names, capability = [], None
        for gpu in gpus:
            try:  # take GPU memory as needed, so a CLI training and the app can share a GPU
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: too late to change, and harmless
                pass
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
            capability = capability or details.get("compute_capability")
    flags = cpu_flags()
    return Hardware(
        gpus=tuple(names),
        gpu_compute_capability=tuple(capability) if capability else None,
        cpu_name=cpu_name(),
        cpu_bf16=bool(flags & set(BF16_CPU_FLAGS)),
        cpu_cores=usable_cores(),
        cpu_features=tuple(flag for flag in SHOWN_CPU_FLAGS if flag in flags),
        cpu_flags_hash=hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12] if flags else "",
    )


def claimed_mixed_precision(hardware: Hardware) -> str | None:
    """The mixed policy this hardware claims to run faster than float32, or None.

    On a GPU: mixed_float16 with tensor cores (compute capability 7.0 or newer). On a CPU:
    mixed_bfloat16 with AMX or AVX512-BF16. Only a claim: ``resnet.core.precision`` measures it.
    """
    if hardware.gpus:
        capability = hardware.gpu_compute_capability
        return MIXED_FLOAT16 if capability and tuple(capability) >= (7, 0) else None
    return MIXED_BFLOAT16 if hardware.cpu_bf16 else None


@dataclass(frozen=True)
class Placement:
    """Where a run trains: the devices of its replicas and that, in words."""

    devices: tuple[str, ...]  # one TensorFlow device per replica; () = one device, TensorFlow's default
    label: str  # the device(s), as the run's state records them ("GPU: 2 x NVIDIA H200, data-parallel")
    note: str = ""  # appended to the run's messages: "on 2 GPUs, data-parallel", or why "all" trains on one

    @property
    def replicas(self) -> int:
        return max(1, len(self.devices))


def _check_gpus(gpus: str) -> None:
    if gpus not in GPU_CHOICES:
        raise ValueError(f"gpus must be {' or '.join(map(repr, GPU_CHOICES))}; got {gpus!r}")


def training_text(placement: Placement, hardware: Hardware | None = None) -> str:
    """Where a run trains, said once and plainly: "Training on CPU (AMD EPYC, 2 cores, AVX2 FMA)"."""
    hardware = hardware or detect_hardware()
    if hardware.gpus:
        text = f"Training on {placement.label}"
        return f"{text} ({placement.note})" if placement.note and placement.replicas < 2 else text
    text = f"Training on CPU ({hardware.cpu_text})"
    return f"{text} ({placement.note})" if placement.note else text


def training_placement(gpus: str, hardware: Hardware | None = None) -> Placement:
    """Where a run with ``TrainConfig.gpus == gpus`` trains on this machine (see the module docstring)."""
    _check_gpus(gpus)
    hardware = hardware or detect_hardware()
    count = len(hardware.gpus)
    if gpus == "1":
        return Placement((), hardware.device_label)
    if count < 2:
        found = "1 GPU" if count else "no GPU"
        return Placement((), hardware.device_label, f"on one device: all GPUs were asked for, this machine has {found}")
    names = sorted(set(hardware.gpus))
    kinds = f"{count} x {names[0]}" if len(names) == 1 else " + ".join(hardware.gpus)
    devices = tuple(f"/gpu:{index}" for index in range(count))
    return Placement(devices, f"GPU: {kinds}, data-parallel", f"on {count} GPUs, data-parallel")


def training_strategy(gpus: str, devices: Sequence[str] | None = None):
    """The ``tf.distribute`` strategy to build, load and train a model under, for ``TrainConfig.gpus``.

    ``"1"``: TensorFlow's default strategy (one device; the code path of a run without this setting).
    ``"all"``: a MirroredStrategy over ``devices`` (by default every GPU, ``training_placement``), whose
    ``model.fit`` splits each global batch of ``batch_size`` across them; with fewer than two devices,
    the default strategy.
    """
    import tensorflow as tf  # here: only training needs it

    _check_gpus(gpus)
    if gpus == "all":
        devices = training_placement(gpus).devices if devices is None else tuple(devices)
        if len(devices) >= 2:
            return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.get_strategy()
