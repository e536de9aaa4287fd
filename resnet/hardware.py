"""What this machine offers for training: GPUs, CPU bfloat16 support, and the precision to use.

``auto`` precision: mixed_float16 on a GPU with tensor cores (compute capability 7.0 or newer);
mixed_bfloat16 on a CPU with AMX or AVX512-BF16 (elsewhere bfloat16 is emulated and can be many times
slower than float32); float32 everywhere else.
"""

from __future__ import annotations

import functools
import platform
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
