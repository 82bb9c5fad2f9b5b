import numpy as np
import torch

from llama_core.insight import insight_figures as figures
from llama_core.chinchilla import plan
from llama_core.generation import encode_prompt, generate_stream
from llama_core.label_layout import PlotArea, _box, _overlaps, place_labels
from llama_core.insight.lens_figure import WINDOW
from llama_core.insight.logit_lens import logit_lens
from llama_core.model import Transformer
from llama_core.published import published_models
from llama_core.insight.run_figures import CHOSEN, KEPT, REMOVED
from llama_core.insight.run_record import RunRecord
from llama_core.sampling import SamplingParams
from llama_core.insight.scoring import compare_on_tokens, score_text
from llama_core.token_display import chart_label, display_tokens, positioned_labels


def record(tiny_model, tokenizer, **settings) -> RunRecord:
    ids = encode_prompt(tokenizer, "Alice was")
    run = RunRecord.start("tiny", tokenizer, "Alice was", ids, {})
    for step in generate_stream(tiny_model, tokenizer, ids, SamplingParams(max_new_tokens=5, seed=1, **settings)):
        run.add(step)
    return run


def test_pipeline_figure_has_one_panel_per_stage_over_the_same_candidates(tiny_model, tokenizer):
    run = record(tiny_model, tokenizer, temperature=0.8, top_k=3)
    fig = figures.pipeline_figure(run, 2)
    step = run.steps[2]
    assert len(step.stages) == 6 and "probabilities of the raw logits" in fig.layout.annotations[0].text
    panels = {}
    for bar in fig.data:
        panels.setdefault(bar.xaxis, []).append(bar)
    assert len(panels) == len(step.stages)
    for (name, probs), bars in zip(step.stages, panels.values()):
        assert all(list(bar.y) == list(bars[0].y) for bar in bars)  # the same candidates, in the same order
        drawn = [next(bar.x[i] for bar in bars if bar.x[i] is not None) for i in range(len(probs))]
        kept = [x for x, p in zip(drawn, probs) if p > 0]
        assert kept == [p for p in probs if p > 0]
    top_k = panels[list(panels)[3]]
    removed = next(bar for bar in top_k if bar.marker.color == REMOVED)
    heights = [x for x in removed.x if x is not None]
    temperature = step.stages[2][1]
    # A removed candidate is drawn grey at its height before removal: its probability after temperature.
    assert len(heights) == sum(p == 0 for p in step.stages[3][1]) and all(h > 0 for h in heights)
    assert sorted(heights) == sorted(t for t, p in zip(temperature, step.stages[3][1]) if p == 0)
    colours = {bar.name: bar.marker.color for bar in fig.data}
    assert colours["the sampled token"] == CHOSEN and colours["kept by this stage"] == KEPT
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["linear", "log scale"]


def test_logit_lens_figure_covers_every_position_and_marks_the_right_guesses(tiny_model, tokenizer):
    ids = encode_prompt(tokenizer, "Alice was beginning to get very tired of sitting by her sister on the bank, "
                                   "and of having nothing to do: once or twice she had peeped into the book")
    lens = logit_lens(tiny_model, ids)
    pieces = display_tokens(tokenizer, ids)
    guesses = [[tokenizer.piece(int(t)) for t in row] for row in lens.top_ids]
    fig = figures.logit_lens_figure(lens, pieces, guesses)
    heatmap, marks = fig.data
    assert len(ids) > WINDOW  # long enough that the figure opens on a window
    assert list(heatmap.y) == lens.labels and list(heatmap.x) == positioned_labels(pieces)  # every position
    assert list(fig.layout.xaxis.range) == [len(ids) - WINDOW - 0.5, len(ids) - 0.5]
    assert heatmap.text[-1][-1] == chart_label(guesses[-1][-1], 8)
    hits = {(y, x) for x, y in zip(marks.x, marks.y)}
    expected = {(lens.labels[layer], heatmap.x[t]) for layer in range(len(lens.labels)) for t in range(len(ids) - 1)
                if lens.top_ids[layer, t] == ids[t + 1]}
    assert hits == expected
    assert f"rank {int(lens.next_ranks[1, 3]) + 1}" in heatmap.hovertext[1][3]
    # The last row is the model's own prediction: its ranks are those of a plain forward pass, checked where
    # no other logit is within rounding of the actual next token's (the two paths sum in different orders).
    with torch.no_grad():
        logits = tiny_model(torch.tensor([ids])).logits[0, :-1].float()  # (T - 1, V)
    target = logits.gather(1, torch.tensor(ids[1:])[:, None])
    gaps = (logits - target).abs()
    gaps[torch.arange(len(ids) - 1), torch.tensor(ids[1:])] = float("inf")
    clear = gaps.min(dim=1).values > 1e-4 * target[:, 0].abs().clamp(min=1)
    assert clear.sum() > (len(ids) - 1) // 2
    expected = (logits > target).sum(dim=1)
    assert (torch.tensor(lens.next_ranks[-1])[clear] == expected[clear]).all()


def test_divergence_and_surprisal_figures(tiny_model, tokenizer):
    ids = encode_prompt(tokenizer, "Alice was beginning to get")
    torch.manual_seed(3)
    other = Transformer(tiny_model.args).eval().requires_grad_(False)
    fig = figures.divergence_figure(compare_on_tokens(tiny_model, other, ids), [tokenizer.piece(i) for i in ids],
                                    ("a", "b"))
    assert len(fig.data) == 3 and len(fig.data[2].y) == len(ids) - 1
    scores = {"a": score_text(tiny_model, tokenizer, ids), "b": score_text(other, tokenizer, ids)}
    assert len(figures.surprisal_figure(scores).data) == 2
    html = figures.scored_text_html(scores["a"])
    assert html.count('class="tok scored"') == len(ids) - 1 and "perplexity" in html


def test_chinchilla_figure_places_the_plan_its_optimum_and_the_published_models():
    p = plan(n_params=6.7e9, tokens=1e12)
    fig = figures.chinchilla_figure(p, published_models(), [{"name": "playground-16m", "params": 16e6, "tokens": 15e6}])
    names = [t.name for t in fig.data]
    assert {"LLaMA", "GPT-3", "Chinchilla", "our models", "your plan", "optimal for the same compute"} <= set(names)
    llama = fig.data[names.index("LLaMA")]
    assert "LLaMA-65B" in llama.customdata  # on hover always; as a label where it fits
    assert sum(bool(t) for trace in fig.data if trace.text for t in trace.text) >= 8
    assert "tokens/param" in figures.plan_markdown(p) and "Table 3" in figures.plan_markdown(p)  # why not ~20


def test_labels_never_overlap_and_stay_inside_the_plot():
    rng = np.random.default_rng(0)
    points = [(f"model-{i}", 10 ** rng.uniform(9, 10.5), 10 ** rng.uniform(11.5, 12.5)) for i in range(30)]
    area = PlotArea((8.5, 11.0), (11.0, 13.0), 880, 380)
    sides = place_labels(points, area)
    boxes = []
    for (name, x, y), side in zip(points, sides):
        if side:
            px, py = area.pixel(np.log10(x), np.log10(y))
            boxes.append(_box(px, py, side, name))
    assert 5 <= len(boxes) < len(points)  # a crowded cluster: some labels placed, the rest left to the hover
    assert all(0 <= b[0] and b[2] <= 880 and 0 <= b[1] and b[3] <= 380 for b in boxes)
    assert not any(_overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_inference_aware_figure_draws_the_optimum_moving_and_places_llama():
    from llama_core.chinchilla import implied_inference_tokens, inference_aware_optimum
    from llama_core.published import chinchilla_loss

    loss = chinchilla_loss(6.7e9, 1e12)
    fig = figures.inference_aware_figure(loss, 1e13, published_models())
    curve = next(t for t in fig.data if t.name.startswith("your target loss") and t.xaxis == "x")
    # Left panel: N of the optimum falls as demand grows, and each point is the optimum at its demand.
    assert list(curve.y) == sorted(curve.y, reverse=True)
    assert curve.y[10] == inference_aware_optimum(loss, curve.x[10]).n_params
    markers = {t.text[0]: t for t in fig.data if t.mode == "markers+text" and t.xaxis == "x"}
    assert set(markers) == {"LLaMA-7B", "LLaMA-13B", "LLaMA-65B"}
    assert markers["LLaMA-7B"].x[0] == implied_inference_tokens(6.7e9, 1e12) and markers["LLaMA-7B"].y[0] == 6.7e9
    assert markers["LLaMA-65B"].x[0] == curve.x[0]  # under-trained by this law: at the left edge, off its curve
    you = next(t for t in fig.data if t.name == "your demand" and t.xaxis == "x")
    assert you.x[0] == 1e13 and you.y[0] == inference_aware_optimum(loss, 1e13).n_params


def test_inference_markdown_compares_with_the_compute_optimal_model_and_cites():
    from llama_core.chinchilla import inference_aware_optimum

    optimum, base = inference_aware_optimum(2.1, 1e12), inference_aware_optimum(2.1, 0)
    text = figures.inference_markdown(optimum, base)
    extra = base.training_flops + 2 * base.n_params * 1e12
    assert f"{extra:.3g} FLOPs for the same use, **{extra / optimum.total_flops - 1:.1%} more**" in text
    assert all(cite in text for cite in ("arXiv:2203.15556", "arXiv:2401.00448", "arXiv:2302.13971", "E = 1.69"))
