"""A short measured probe of this machine's matrix-vector kernels, cached per CPU model.

Decoding one token reads every weight once, so its speed is the speed of the kernel that reads
them, and which kernel is fastest is a property of the machine, not of PyTorch: on this project's
earlier AVX2 machine a bf16 product ran 6× slower than fp32; on an AVX-512 machine with
avx512_bf16 it is faster per weight, and on another AVX-512 machine fp16 read twice bf16's bytes
per second. So `dtype="auto"` asks this probe: one 1×K by N×K product (the issue's yardstick,
TinyLlama's FFN: 5632×2048) per kernel, as GB/s of weights read; and, for the float types, the same matrix
times 32 rows (a prefill's matrix product) in GFLOP/s, since a CPU without matrix units for a type (fp16
here: AMX has bf16 and int8 only) can read it fast one row at a time and still prefill several times slower.

Other work on the machine only slows a kernel down, so the kernels take turns for a few rounds and
each keeps its fastest time. The probe also notes the share of its threads' time the process really
got; below `MIN_CPU_SHARE` the numbers say more about the neighbours than the kernels: such a result
is used for this process only (not written to the cache), and `reliable` is False, which makes
`dtype="auto"` keep the checkpoint's own dtype.

The result is cached as JSON under `$XDG_CACHE_HOME/llama-playground/` (default `~/.cache/…`),
keyed by the CPU's model name and ISA flags, PyTorch's kernel capability (`ATEN_CPU_CAPABILITY`
changes it), the torch version and the thread count; `refresh=True` measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

PROBE_SHAPE = (5632, 2048)  # (N, K): TinyLlama-1.1B's FFN up projection
PREFILL_ROWS = 32
PROBE_VERSION = 3
MEMORY_BYTES = 1 << 27  # a buffer summed to measure the memory's read rate: past the private caches  # part of the cache key: a probe that measures more is not answered by an older entry
ROUNDS = 6  # timed turns per kernel, after one warm-up round; the fastest counts
MIN_CPU_SHARE = 0.6  # of threads × wall time: below it, other processes held our cores
# Bytes one weight costs each kernel (int4: half a byte plus a bf16 scale and zero per 32 weights).
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp32-input-major": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5 + 4 / 32}
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "avx512_vnni", "f16c")


@dataclass(frozen=True)
class KernelSpeeds:
    """GB/s of weights each matrix-vector kernel reads on this machine, and what it was measured on."""

    cpu: str
    capability: str
    threads: int
    torch_version: str
    gbs: dict[str, float]
    cpu_share: float = 1.0  # of threads × wall time that the probe's process got while measuring
    prefill_gflops: dict[str, float] = field(default_factory=dict)  # fp32/bf16/fp16, PREFILL_ROWS rows

    @property
    def reliable(self) -> bool:
        return self.cpu_share >= MIN_CPU_SHARE

    def weights_per_second(self, kind: str) -> float:
        """Weights read per second (GB/s ÷ bytes per weight): what decode speed follows. A kernel is
        counted at most at the memory's read rate: the probe's matrix may sit in the CPU's last-level cache,
        a model's weights stream from memory."""
        rate = min(self.gbs[kind], self.gbs.get("memory", float("inf")))
        return rate * 1e9 / BYTES_PER_WEIGHT[kind]

    def summary(self) -> str:
        """One line: 'fp32 25.1, bf16 16.3, fp16 8.7, int8 17.4, int4 9.0 GB/s (2 threads, AVX512)'."""
        shown = ", ".join(f"{kind} {self.gbs[kind]:.1f}" for kind in ("fp32", "bf16", "fp16", "int8", "int4", "memory")
                          if kind in self.gbs)
        busy = "" if self.reliable else f"; machine busy, got {self.cpu_share:.0%} of the CPU: not used"
        prefill = ", ".join(f"{kind} {rate:.0f}" for kind, rate in self.prefill_gflops.items())
        prefill = f"; prefill {prefill} GFLOP/s" if prefill else ""
        return f"{shown} GB/s{prefill} ({self.threads} thread{'s' * (self.threads != 1)}, {self.capability}{busy})"


def cpu_model() -> str:
    """The CPU's model name and the ISA flags that decide the kernels (a VM may name only 'Xeon')."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the platform's own description
        import platform

        name = platform.processor() or platform.machine()
    present = [flag for flag in ISA_FLAGS if flag in flags]
    return f"{name} [{' '.join(present)}]" if present else name


def probe_kernels(threads: int | None = None, cache_dir: str | Path | None = None, refresh: bool = False) -> KernelSpeeds:
    """This machine's kernel speeds, from the cache or measured now (about 0.2-0.5 s)."""
    threads = threads or torch.get_num_threads()
    key = _cache_key(threads)
    if not refresh and key in _THIS_PROCESS:
        return _THIS_PROCESS[key]
    path = _cache_path(cache_dir)
    cached = {} if refresh else _read_cache(path)
    if key in cached:
        try:
            return KernelSpeeds(**cached[key])
        except TypeError:  # written by another version of this module: measure again
            pass
    speeds = _THIS_PROCESS[key] = _measure(threads)
    if speeds.reliable:
        cached[key] = asdict(speeds)
        _write_cache(path, cached)
    return speeds


_THIS_PROCESS: dict[str, KernelSpeeds] = {}  # one probe per process, whether or not it was cached


def _cache_key(threads: int) -> str:
    text = (f"probe {PROBE_VERSION}|{cpu_model()}|{torch.backends.cpu.get_cpu_capability()}|torch {torch.__version__}"
            f"|{threads} threads")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path(cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llama-playground"
    return Path(cache_dir) / "kernel_probe.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, unreadable or corrupt: measure
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1))
        partial.replace(path)  # atomic: two processes probing at once never leave half a file
    except OSError:  # a read-only home: the probe just runs again next time
        pass


def _measure(threads: int) -> KernelSpeeds:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gbs, prefill, cpu_share = _time_kernels(threads)
    finally:
        torch.set_num_threads(previous)
    return KernelSpeeds(cpu_model(), torch.backends.cpu.get_cpu_capability(), threads, torch.__version__, gbs,
                        round(cpu_share, 2), prefill)


@torch.inference_mode()
def _time_kernels(threads: int) -> tuple[dict[str, float], dict[str, float], float]:
    """GB/s per kernel and prefill GFLOP/s per float type (fastest of the rounds), and the share of `threads`
    cores the process got meanwhile."""
    from .int4 import Int4Linear
    from .int8 import Int8Linear
    from .page_release import return_freed_memory

    n, k = PROBE_SHAPE
    weight = torch.empty(n, k).uniform_(-0.05, 0.05, generator=torch.Generator().manual_seed(0))
    x = torch.empty(1, k).uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
    bf16, fp16 = weight.to(torch.bfloat16), weight.to(torch.float16)
    # kind → (function, its arguments): each a 1×K by N×K product in that kernel.
    products = {
        "fp32": (F.linear, (x, weight)),
        "fp32-input-major": (F.linear, (x, weight.t().contiguous().t())),
        "bf16": (F.linear, (x.to(torch.bfloat16), bf16)),
        "fp16": (F.linear, (x.to(torch.float16), fp16)),
        "int8": (Int8Linear(weight), (x,)),
        "int4": (Int4Linear.from_float(weight, 32), (x,)),
    }
    rows = torch.empty(PREFILL_ROWS, k).uniform_(-1, 1, generator=torch.Generator().manual_seed(2))
    for kind, w in (("fp32", weight), ("bf16", bf16), ("fp16", fp16)):
        products[f"{kind} prefill"] = (F.linear, (rows.to(w.dtype), w))
    stream = torch.ones(MEMORY_BYTES // 4)
    products["memory"] = (torch.sum, (stream,))
    for function, arguments in products.values():
        function(*arguments)  # the first call pays for allocation and kernel selection
    best = dict.fromkeys(products, float("inf"))
    wall, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(ROUNDS):
        for kind, (function, arguments) in products.items():
            start = time.perf_counter()
            function(*arguments)
            best[kind] = min(best[kind], time.perf_counter() - start)
    share = (_cpu_seconds() - cpu) / ((time.perf_counter() - wall) * threads)
    del products, weight, bf16, fp16, stream
    return_freed_memory()  # the probe's ~150 MB of matrices: not to stay in the heap of the process that loads
    gbs = {kind: round(n * k * BYTES_PER_WEIGHT[kind] / seconds / 1e9, 2) for kind, seconds in best.items()
           if kind in BYTES_PER_WEIGHT}
    gbs["memory"] = round(MEMORY_BYTES / best["memory"] / 1e9, 2)
    prefill = {kind.removesuffix(" prefill"): round(2 * PREFILL_ROWS * n * k / seconds / 1e9, 1)
               for kind, seconds in best.items() if kind.endswith(" prefill")}
    return gbs, prefill, share


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
