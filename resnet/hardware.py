"""What this machine offers for training: GPUs, CPU bfloat16 support, the precision and the devices to use.

``auto`` precision: mixed_float16 on a GPU with tensor cores (compute capability 7.0 or newer);
mixed_bfloat16 on a CPU with AMX or AVX512-BF16 (elsewhere bfloat16 is emulated and can be many times
slower than float32); float32 everywhere else.

Devices (``TrainConfig.gpus``): ``"1"`` trains on TensorFlow's default device, the first GPU or else the
CPU; ``"all"`` trains data-parallel on every GPU when there are two or more (``tf.distribute``'s
MirroredStrategy: the model is copied to each, each batch is split evenly across them, and their
gradients are combined into the whole batch's before every update), and on the default device otherwise. ``training_placement``
decides and words it; ``training_strategy`` is the strategy a model is built and trained under.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[str, ...]  # names of the GPUs TensorFlow sees
    gpu_compute_capability: tuple[int, int] | None  # of the first GPU
    cpu_name: str
    cpu_bf16: bool  # AMX or AVX512-BF16 present

    @property
    def device_label(self) -> str:
        if self.gpus:
            return f"GPU: {self.gpus[0]}" + (f" (+{len(self.gpus) - 1} more)" if len(self.gpus) > 1 else "")
        return f"CPU: {self.cpu_name}" + (" (bfloat16 units)" if self.cpu_bf16 else "")


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


@functools.lru_cache(maxsize=1)
def detect_hardware() -> Hardware:
    import tensorflow as tf

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
    return Hardware(
        gpus=tuple(names),
        gpu_compute_capability=tuple(capability) if capability else None,
        cpu_name=cpu_name(),
        cpu_bf16=bool(cpu_flags() & set(BF16_CPU_FLAGS)),
    )


def resolve_precision(requested: str, hardware: Hardware | None = None) -> str:
    """Turn ``auto`` into a concrete Keras dtype policy name for this machine."""
    if requested != "auto":
        return requested
    hardware = hardware or detect_hardware()
    if hardware.gpus:
        capability = hardware.gpu_compute_capability
        return "mixed_float16" if capability and capability >= (7, 0) else "float32"
    return "mixed_bfloat16" if hardware.cpu_bf16 else "float32"


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
    if gpus not in ("1", "all"):
        raise ValueError(f"gpus must be '1' or 'all'; got {gpus!r}")


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
    import tensorflow as tf

    _check_gpus(gpus)
    if gpus == "all":
        devices = training_placement(gpus).devices if devices is None else tuple(devices)
        if len(devices) >= 2:
            return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.get_strategy()
