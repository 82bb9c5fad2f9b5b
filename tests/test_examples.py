"""The example scripts and the tour notebook run end to end on the bundled model, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
from _bundled import largest_bundled_model  # noqa: E402

MODEL = largest_bundled_model()
pytestmark = pytest.mark.skipif(MODEL is None, reason="no bundled model in models/")

# One thread: the examples are tiny, and the test machine's cores may be busy with other work.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_example(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          env=env or ENV, cwd=EXAMPLES.parent, timeout=300)


def test_stream_completion_prints_the_prompt_its_continuation_and_the_speed():
    done = run_example("stream_completion.py", "--prompt", "In the beginning", "--max-new-tokens", "8",
                       "--seed", "1", "--temperature", "0.8", "--top-p", "0.9", "--template", "plain")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("In the beginning") and len(done.stdout.strip()) > len("In the beginning")
    assert "tokens/s" in done.stderr and "seed 1" in done.stderr


def test_stream_completion_reports_a_bad_setting_without_a_traceback():
    done = run_example("stream_completion.py", "--temperature", "5")
    assert done.returncode == 2
    assert "temperature" in done.stderr and "Traceback" not in done.stderr


def test_inspect_run_writes_offline_charts_and_the_run_as_json(tmp_path):
    done = run_example("inspect_run.py", "--max-new-tokens", "6", "--head", "0", "--step", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("attention.html", "probability.html", "alternatives.html"):
        page = (tmp_path / name).read_text(encoding="utf-8")
        # plotly.js itself is in the page (megabytes), not fetched from a CDN by a <script src=...>
        assert "Plotly.newPlot" in page and len(page) > 1_000_000 and 'src="http' not in page
    assert 'class="tok"' in (tmp_path / "tokens.html").read_text(encoding="utf-8")
    run = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert len(run["tokens"]) == 6 and all("top" in token for token in run["tokens"])
    assert run["seed"] == 0 and run["prompt"] == "In the beginning"


def test_load_real_weights_describes_a_local_checkpoint_and_completes_greedily():
    done = run_example("load_real_weights.py", "--model", str(MODEL), "--dtype", "fp32", "--max-new-tokens", "5")
    assert done.returncode == 0, done.stderr
    assert "format: hf" in done.stdout and "dtype: float32" in done.stdout and "greedy: In the beginning" in done.stdout


def test_load_real_weights_explains_an_uncached_hub_id_when_offline(tmp_path):
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    done = run_example("load_real_weights.py", "--model", "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
                       env=env)
    assert done.returncode == 2
    assert "HF_HUB_OFFLINE" in done.stderr and "Traceback" not in done.stderr


def test_tour_notebook_runs_top_to_bottom(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits this process's environment
    notebook = nbformat.read(EXAMPLES / "playground_tour.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "saved with outputs"
    # Run where Jupyter would open it; execute() raises CellExecutionError naming the failing cell.
    where = {"metadata": {"path": str(EXAMPLES)}}
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources=where)
    client.execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
