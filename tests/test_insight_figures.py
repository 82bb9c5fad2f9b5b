import torch

from llama_core import insight_figures as figures
from llama_core.chinchilla import plan
from llama_core.generation import encode_prompt, generate_stream
from llama_core.logit_lens import logit_lens
from llama_core.model import Transformer
from llama_core.published import published_models
from llama_core.run_record import RunRecord
from llama_core.sampling import SamplingParams
from llama_core.scoring import compare_on_tokens, score_text


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
    assert len(fig.data) == len(step.stages) == 6
    assert all(list(bar.y) == list(fig.data[0].y) for bar in fig.data)
    assert list(fig.data[-1].x) == list(step.stages[-1][1])
    assert sum(x > 0 for x in fig.data[3].x) <= 3  # the top-k panel keeps at most k candidates


def test_logit_lens_figure_labels_cells_with_the_top_tokens(tiny_model, tokenizer):
    ids = encode_prompt(tokenizer, "Alice was beginning")
    lens = logit_lens(tiny_model, ids)
    fig = figures.logit_lens_figure(lens, [tokenizer.piece(i) for i in ids], tokenizer.piece)
    heatmap = fig.data[0]
    assert list(heatmap.y) == lens.labels and len(heatmap.x) == len(ids)
    assert heatmap.text[-1][-1] == figures.visible_piece(tokenizer.piece(int(lens.top_ids[-1, -1])))


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
    assert "LLaMA-65B" in llama.text
    assert "tokens/param" in figures.plan_markdown(p)


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
