"""Peak memory while loading stays within 1.2× of the loaded model's steady size.

Each load runs in a fresh subprocess that reports its resident memory before loading (imports done), its
peak while loading (VmHWM) and its steady size: after a decode step, with every weight resident once (a
memory-mapped embedding table comes in row by row as text is generated); the test compares what loading
added: (peak − before) ≤ 1.2 × (steady − before). Before loading gave back each replaced weight's
file pages at once, an fp32 load with the input-major re-layout peaked at twice its steady size.

    python tests/test_load_memory.py --make DIR --preset TinyLlama-1.1B   # the full-size measurement
    python tests/test_load_memory.py --worker DIR '{"dtype": "fp32"}'
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1.2
# TinyLlama's vocabulary and proportions at a quarter of its width and 8 layers: ~60M parameters, 240 MB in
# fp32 — large enough that the interpreter's own allocations are noise, small enough for CI.
SHAPE = dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=2, vocab_size=32000, multiple_of=256, max_seq_len=256)


def rss_mb() -> tuple[float, float]:
    """(resident now, peak so far) in MB, from /proc (VmHWM survives every free; psutil has no peak on Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def make_checkpoint(directory: Path, dtype: torch.dtype, args=None) -> None:
    sys.path.insert(0, str(ROOT))
    from llama_core.config import ModelArgs
    from llama_core.formats.hf import save_hf_checkpoint
    from llama_core.model import Transformer

    args = args or ModelArgs(**SHAPE)
    with torch.device("meta"):
        model = Transformer(args)
    generator = torch.Generator().manual_seed(0)
    state = {name: (torch.randn(p.shape, generator=generator) * 0.02).to(dtype)
             for name, p in model.state_dict().items()}
    save_hf_checkpoint(state, args, directory)


def worker(directory: str, options: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    from llama_core import load_checkpoint
    from llama_core.kernels.page_release import return_freed_memory

    # A first load imports what loading needs and runs the kernel probe (once per machine): neither is
    # part of loading a model, so the measured load is the second.
    load_checkpoint(directory, **options)  # dropped at once: nothing keeps it
    return_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the resident size now
    before, _ = rss_mb()
    loaded = load_checkpoint(directory, **options)
    _, peak = rss_mb()
    with torch.inference_mode():
        cache = loaded.model.new_cache(max_len=8)
        loaded.model(torch.tensor([[1, 2, 3]]), cache)
        loaded.model(torch.tensor([[4]]), cache)
        # A memory-mapped embedding table comes in as decode looks rows up; after some text it is all there.
        loaded.model.tok_embeddings.weight.sum()
    steady, _ = rss_mb()
    return {"before": before, "peak": peak, "steady": steady, "weights_mb": loaded.n_bytes / 2**20,
            "kernels": loaded.kernels.weights}


def measure(directory: Path, options: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", str(directory), json.dumps(options)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def checkpoints():
    # Its own folder, not pytest's numbered ones: another pytest process may prune those while a worker has the
    # files mapped, and the pages of a deleted file are never given back (which a load here counts on).
    with tempfile.TemporaryDirectory(prefix="load-memory-") as folder:
        yield _make_checkpoints(Path(folder))


def _make_checkpoints(root: Path) -> dict[str, Path]:
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[name] = root / f"memory-{name}"
        make_checkpoint(out[name], dtype)
    # A Q8_0 file: its blocks are re-quantized per row for the int8 kernel (int4 when asked), and the file's
    # pages must not stay resident beside the converted matrices.
    from llama_core.formats.gguf_export import export_gguf

    source = root / "memory-gguf-source"
    make_checkpoint(source, torch.float32)
    # Meta's tokenizer: the 32,000 pieces of SHAPE's vocabulary.
    shutil.copy(ROOT / "tests/data/third_party/llama-tokenizer.model", source / "tokenizer.model")
    out["q8_0"] = root / "model-q8_0.gguf"
    export_gguf(source, out["q8_0"], "q8_0")
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux /proc")
@pytest.mark.parametrize("stored, options", [
    ("fp32", {"dtype": "fp32"}),  # input-major re-layout and fusing: a copy of every matrix
    ("bf16", {"dtype": "bf16"}),  # fused q/k/v and gate/up: copies of most matrices
    ("bf16", {"dtype": "fp32"}),  # upcast: every matrix converted
    ("fp32", {"quantize": "int8"}),
    ("fp32", {"quantize": "int4"}),
    ("q8_0", {}),  # Q8_0 blocks → int8, a few rows at a time
    ("q8_0", {"quantize": "int4"}),  # Q8_0 blocks dequantized and re-quantized to int4
], ids=["fp32", "bf16", "bf16-to-fp32", "int8", "int4", "gguf-q8_0", "gguf-q8_0-to-int4"])
def test_loading_peaks_within_a_fifth_above_the_steady_size(checkpoints, stored, options):
    result = measure(checkpoints[stored], options)
    added_peak, added_steady = result["peak"] - result["before"], result["steady"] - result["before"]
    assert added_steady > 0.5 * result["weights_mb"], result  # the model is really resident
    assert added_peak <= LIMIT * added_steady, result


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], json.loads(sys.argv[3]))))
    elif sys.argv[1] == "--make":  # --make DIR --preset NAME [--dtype bf16]
        sys.path.insert(0, str(ROOT))
        from llama_core.config import preset

        dtype = torch.bfloat16 if "--dtype" in sys.argv and sys.argv[sys.argv.index("--dtype") + 1] == "bf16" \
            else torch.float32
        make_checkpoint(Path(sys.argv[2]), dtype, preset(sys.argv[sys.argv.index("--preset") + 1]))
