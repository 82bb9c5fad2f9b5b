"""Side by side when a server is on one side (or both): a local model against a remote one, or two remote
sizes — the seed's ladder, 7B → 13B → 70B, walked on real servers.

Each side generates from the same prompt, sampler and seed. The divergence chart of two local models has
both read one text and compares their whole distributions; a server gives neither the distribution nor a
reading of another model's text, so here each side's own run is drawn (the probability of each chosen
token) and the summary says where the two texts part.
"""

from __future__ import annotations

import os

import gradio as gr

from llama_core import ParameterError, SamplingParams
from llama_core.backends import RemoteError
from llama_core.errors import CheckpointError, TokenizerError
from llama_core.insight.report_page import confidence_figure
from llama_core.insight.run_record import RunRecord
from llama_core.templates import apply_template

from .registry import ModelRegistry
from .remote_runs import start_record
from .runs import fitted_stream

PAIR_TOP_N = 5  # alternatives kept per token: the chart draws p(chosen) only


def side_run(registry: ModelRegistry, label: str, prompt: str, template: str, params: SamplingParams) -> RunRecord:
    """One side's run as a record; a server's fault mid-run keeps the tokens before it, with the error."""
    text = apply_template(template, prompt, "")
    settings = {"template": template, "max_new_tokens": params.max_new_tokens}
    try:
        if registry.is_remote(label):
            remote = registry.remote(label)
            record = start_record(label, remote, text, settings, PAIR_TOP_N)
            stream = remote.generate(text, params, top_n=PAIR_TOP_N)
        else:
            loaded = registry.load(label)
            ids, stream = fitted_stream(loaded, text, params, top_n=PAIR_TOP_N)
            record = RunRecord.start(label, loaded.tokenizer, text, ids, settings)
    except (CheckpointError, TokenizerError, ParameterError) as error:
        raise gr.Error(f"{label}: {error}") from None
    try:
        for step in stream:
            record.add(step)
    except RemoteError as error:
        if not record.steps:
            raise gr.Error(f"{label}: {error}") from None
        record.error = str(error)
    finally:
        stream.close()
    return record


def pair_figure(records: tuple[RunRecord, RunRecord], names: tuple[str, str]):
    """Each side's probability of the token it chose, step by step, on one chart."""
    figures = [confidence_figure(record) for record in records]
    figure = figures[0]
    traces = []
    for name, side in zip(names, figures):
        trace = side.data[0]  # p(chosen); the entropies are left out: a server's is only a lower bound
        trace.name = f"{name}: p(chosen)"
        trace.hovertemplate = trace.hovertemplate.replace("step %{x}", f"{name}, step %{{x}}")
        traces.append(trace)
    figure.data = []
    for trace in traces:
        figure.add_trace(trace, secondary_y=False)
    figure.update_yaxes(title_text="", showticklabels=False, secondary_y=True)
    figure.update_layout(title=f"The probability of each chosen token: {names[0]} and {names[1]}, each on its own run")
    return figure


def parting_summary(records: tuple[RunRecord, RunRecord], names: tuple[str, str]) -> str:
    """Where the two texts part (first differing character), and any fault that cut a run short."""
    texts = [record.text for record in records]
    shared = len(os.path.commonprefix(texts))
    if texts[0] == texts[1]:
        parting = f"the two texts are the same ({len(texts[0])} characters)"
    else:
        steps = [next((i for i, _ in enumerate(r.steps) if len("".join(s.text for s in r.steps[: i + 1])) > shared),
                      len(r.steps)) for r in records]
        parting = (f"the texts part after {shared} characters (at {names[0]}'s token {steps[0]}, {names[1]}'s "
                   f"token {steps[1]})")
    faults = "".join(f" · ⚠️ {name} stopped by an error: {record.error}" for name, record in zip(names, records)
                     if record.error)
    return (f"{parting}; the divergence chart (both models reading one text, whole distributions) needs two local "
            f"models{faults}")
