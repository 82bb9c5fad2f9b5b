"""dtype="auto" by the kernel probe: the fastest dtype that holds every stored weight exactly, never a rounding
one; explicit dtypes kept and their cost named; the probe's cache per machine and its busy-machine guard."""

import json

import pytest
import torch

from llama_core.kernels import probe
from llama_core.kernels.dtype_choice import KernelChoice, choose_dtype, fits_fp16_exactly
from llama_core.kernels.probe import KernelSpeeds, probe_kernels

FP32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16


def speeds(fp32: float, bf16: float, fp16: float, share: float = 1.0) -> KernelSpeeds:
    return KernelSpeeds("test CPU", "AVX512", 2, torch.__version__, {"fp32": fp32, "bf16": bf16, "fp16": fp16}, share)


AVX2 = speeds(25, 4, 4)  # the earlier machine: 16-bit kernels far slower than fp32
BF16_FAST = speeds(25, 19, 8)  # bf16 2 bytes at 19 GB/s = 9.5 G weights/s > fp32's 6.25
FP16_FAST = speeds(18, 19, 41)  # the EPYC: fp16 twice bf16


def choose(stored, requested=None, machine=AVX2, fits=True, exact=True):
    return choose_dtype(stored, requested, machine, fits, lambda: exact)


def test_a_kernel_counts_at_most_at_the_memorys_read_rate():
    # The probe's matrix may sit in the last-level cache; a model's weights stream from memory.
    machine = KernelSpeeds("test CPU", "AVX512", 2, torch.__version__,
                           {"fp32": 45.0, "bf16": 27.0, "fp16": 18.0, "memory": 23.0})
    assert machine.weights_per_second("fp32") == 23e9 / 4 and machine.weights_per_second("fp16") == 18e9 / 2
    assert choose(BF16, machine=machine)[0] == BF16  # 11.5 G weights/s against fp32's 5.75


def test_fp32_weights_are_never_rounded_by_auto():
    for machine in (AVX2, BF16_FAST, FP16_FAST):
        assert choose(FP32, machine=machine)[0] == FP32


def test_16_bit_weights_take_the_fastest_exact_dtype():
    assert choose(BF16, machine=AVX2) == (FP32, "auto: fp32, exact for bf16 weights, 3.12× bf16's weights/s, "
                                                  "3.12× fp16's weights/s")
    assert choose(BF16, machine=BF16_FAST)[0] == BF16
    assert choose(FP16, machine=BF16_FAST)[0] == FP32  # bf16 would round fp16 weights: not a candidate
    assert choose(FP16, machine=FP16_FAST)[0] == FP16
    # bf16 → fp16 only where every weight survives the trip; otherwise the next fastest.
    assert choose(BF16, machine=FP16_FAST, exact=True)[0] == FP16
    assert choose(BF16, machine=FP16_FAST, exact=False)[0] == BF16
    assert choose(BF16, machine=AVX2, fits=False) == (BF16, "auto: bf16, the checkpoint's own, 1.00× fp16's "
                                                            "weights/s; fp32 would not fit the memory")


def test_a_type_that_prefills_at_under_half_another_candidates_rate_goes_last():
    # fp16 reads a row at 7.3 GB/s, a little faster per weight than fp32 at 14, but its matrix products run
    # at well under half of fp32's (a CPU with matrix units for bf16 only, as AMX).
    machine = KernelSpeeds("test CPU", "AVX512", 1, torch.__version__, {"fp32": 14.0, "bf16": 10.2, "fp16": 7.3},
                           1.0, {"fp32": 100.0, "bf16": 400.0, "fp16": 40.0})
    dtype, reason = choose(FP16, machine=machine)
    assert dtype == FP32 and reason.endswith("passed over fp16 (prefill 2.5× slower)")
    assert choose(BF16, machine=machine)[0] == BF16
    assert choose(FP16, machine=machine, fits=False)[0] == FP16  # the only candidate left


def test_the_fp16_check_reads_the_weights_only_when_fp16_would_win():
    reads = []
    choose_dtype(BF16, None, BF16_FAST, True, lambda: reads.append(1) or True)
    assert reads == []
    choose_dtype(BF16, None, FP16_FAST, True, lambda: reads.append(1) or True)
    assert reads == [1]


def test_explicit_dtypes_are_kept_and_their_cost_named():
    assert choose(FP32, requested=BF16) == (BF16, "bf16 as asked; the checkpoint's fp32 weights rounded")
    assert choose(FP16, requested=BF16)[1].endswith("rounded")
    assert choose(BF16, requested=FP16)[1].endswith("rounded")  # range: not checked for an explicit choice
    assert choose(BF16, requested=FP32)[1] == "fp32 as asked; the checkpoint's bf16 weights exactly converted"
    assert choose(BF16, requested=BF16)[1] == "bf16 as asked, the checkpoint's own"


def test_a_busy_or_missing_probe_keeps_the_stored_dtype():
    assert choose(BF16, machine=speeds(25, 4, 4, share=0.3)) == (
        BF16, "auto: the checkpoint's bf16; the kernel probe ran on a busy machine")
    assert choose(FP16, machine=None)[0] == FP16


def test_bf16_to_fp16_is_exact_only_inside_fp16s_range_and_precision():
    assert fits_fp16_exactly([torch.randn(1000).bfloat16()])
    assert not fits_fp16_exactly([torch.tensor([1e5]).bfloat16()])  # above fp16's 65504
    assert not fits_fp16_exactly([torch.tensor([3e-7 * 1.0078125]).bfloat16()])  # an fp16 subnormal with too few bits
    assert fits_fp16_exactly([torch.tensor([0.0, 2.0**-24]).bfloat16()])  # the smallest subnormal is exact
    assert fits_fp16_exactly([torch.tensor([1e5])])  # not bf16: nothing to check


def test_describe_names_weights_residual_reason_and_the_probe():
    choice = KernelChoice("bf16", "fp32", "auto: bf16, the checkpoint's own", speeds(25.3, 16.3, 8.7))
    assert choice.describe() == ("bf16 weights, fp32 residual (auto: bf16, the checkpoint's own) · probe fp32 25.3, "
                                 "bf16 16.3, fp16 8.7 GB/s (2 threads, AVX512)")
    assert "machine busy, got 30% of the CPU: not used" in speeds(1, 1, 1, 0.3).summary()


def fake_measure(share: float):
    calls = []

    def measure(threads):
        calls.append(threads)
        return speeds(25, 19, 8, share)

    return measure, calls


def test_the_probe_is_cached_per_machine_and_refreshed_on_request(tmp_path, monkeypatch):
    measure, calls = fake_measure(share=0.9)
    monkeypatch.setattr(probe, "_measure", measure)
    monkeypatch.setattr(probe, "_THIS_PROCESS", {})
    first = probe_kernels(threads=2, cache_dir=tmp_path)
    monkeypatch.setattr(probe, "_THIS_PROCESS", {})  # as a new process would
    assert probe_kernels(threads=2, cache_dir=tmp_path) == first and calls == [2]
    stored = json.loads((tmp_path / "kernel_probe.json").read_text())
    assert list(stored.values())[0]["gbs"] == {"fp32": 25, "bf16": 19, "fp16": 8}
    probe_kernels(threads=1, cache_dir=tmp_path)  # another thread count is another key
    probe_kernels(threads=2, cache_dir=tmp_path, refresh=True)
    assert calls == [2, 1, 2]


def test_a_busy_probe_is_not_written_to_the_cache(tmp_path, monkeypatch):
    measure, calls = fake_measure(share=0.3)
    monkeypatch.setattr(probe, "_measure", measure)
    monkeypatch.setattr(probe, "_THIS_PROCESS", {})
    assert not probe_kernels(threads=2, cache_dir=tmp_path).reliable
    assert not (tmp_path / "kernel_probe.json").exists()
    probe_kernels(threads=2, cache_dir=tmp_path)
    assert calls == [2]  # measured once per process all the same


def test_a_corrupt_cache_is_measured_again(tmp_path, monkeypatch):
    measure, calls = fake_measure(share=0.9)
    monkeypatch.setattr(probe, "_measure", measure)
    monkeypatch.setattr(probe, "_THIS_PROCESS", {})
    (tmp_path / "kernel_probe.json").write_text("{not json")
    assert probe_kernels(threads=2, cache_dir=tmp_path).gbs["bf16"] == 19 and calls == [2]


@pytest.mark.numerics
def test_the_real_probe_measures_every_kernel(monkeypatch):
    monkeypatch.setattr(probe, "ROUNDS", 1)
    result = probe._measure(1)
    assert set(result.gbs) == {"fp32", "fp32-input-major", "bf16", "fp16", "int8", "int4", "memory"}
    assert set(result.prefill_gflops) == {"fp32", "bf16", "fp16"} and min(result.prefill_gflops.values()) > 0
    assert all(value > 0 for value in result.gbs.values()) and 0 < result.cpu_share <= 1.5
    assert result.threads == 1 and "[" in result.cpu  # the ISA flags that decide the kernels are in the key
