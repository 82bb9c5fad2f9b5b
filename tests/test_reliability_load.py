"""Checklist E and B14 (docs/reliability.md): the app under concurrent clients, on the app that
the plain modules share (python app.py --queue-size 4); generations are short, mostly on the 1M model."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from app_server import FAST_MODEL, SHARED_QUEUE_SIZE, api_client, shared_server

QUEUE_SIZE = SHARED_QUEUE_SIZE
SLOW_MODEL = "playground-16m (bundled)"


@pytest.fixture(scope="module")
def server(request):
    return shared_server(request.config)


def connect(server):
    return api_client(server.url)


@pytest.fixture(scope="module")
def client(server):
    client = connect(server)
    client.predict(SLOW_MODEL, 96, api_name="/load_model")  # loaded before the timing-sensitive tests
    yield client
    client.close()


def generate(client, **changes):
    fields = dict(prompt="In the beginning", model=FAST_MODEL, max_new_tokens=16, temperature=0.0, seed=1)
    return client.submit(**{**fields, **changes}, api_name="/generate")


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def is_running(job) -> bool:
    # A streaming job reports PROCESSING until its first update, ITERATING after it.
    return job.status().code.name in ("PROCESSING", "ITERATING")


def queue_size(server) -> int:
    with urllib.request.urlopen(server.url + "gradio_api/queue/status", timeout=10) as response:
        import json

        return json.load(response)["queue_size"]


def assert_serves(client) -> None:
    result = generate(client, max_new_tokens=3).result(timeout=60)
    assert result["timing"]["tokens"] == 3


def test_E1_twice_the_queue_size_at_once_one_runs_the_rest_queue_or_hear_it_is_full(server, client):
    from gradio_client.utils import QueueError

    with ThreadPoolExecutor(4) as pool:
        others = list(pool.map(lambda _: connect(server), range(2 * QUEUE_SIZE)))
    blocker = generate(client, model=SLOW_MODEL, max_new_tokens=80)
    wait_until(lambda: is_running(blocker))
    jobs = [generate(other, max_new_tokens=12) for other in others]
    seen_waiting = set()
    while not all(job.done() for job in jobs):
        seen_waiting |= {i for i, job in enumerate(jobs) if job.status().code.name == "IN_QUEUE"}
        time.sleep(0.02)
    finished, full, failed = [], [], []
    for i, job in enumerate(jobs):
        try:
            finished.append((i, job.result()))
        except QueueError:
            full.append(i)
        except Exception as error:  # anything else is a failure of the app
            failed.append((i, error))
    assert not failed
    assert len(finished) == QUEUE_SIZE and len(full) == QUEUE_SIZE  # the queue held exactly its size
    assert {i for i, _ in finished} <= seen_waiting  # each accepted job waited its turn
    runs = sorted([(r["timing"]["started_at"], r["timing"]["finished_at"]) for _, r in finished]
                  + [(blocker.result()["timing"]["started_at"], blocker.result()["timing"]["finished_at"])])
    assert all(later[0] >= earlier[1] for earlier, later in zip(runs, runs[1:]))  # one job at a time
    assert all(r["timing"]["tokens"] == 12 for _, r in finished)
    for other in others:
        other.close()
    assert_serves(client)


def test_E2_the_same_seed_gives_the_same_text_under_concurrency(server, client):
    others = [connect(server) for _ in range(QUEUE_SIZE)]
    alone = generate(client, temperature=1.0, seed=11, max_new_tokens=24).result()
    jobs = [generate(other, temperature=1.0, seed=11, max_new_tokens=24) for other in others]
    texts = {job.result(timeout=120)["text"] for job in jobs}
    assert texts == {alone["text"]} and alone["text"]
    for other in others:
        other.close()
    assert_serves(client)


def test_E3_a_cancel_storm_drains_the_queue_and_leaves_memory_flat(server, client):
    process = psutil.Process(server.process.pid)

    def storm(cycles: int) -> int:
        for _ in range(cycles):
            generate(client, max_new_tokens=40).cancel()
        wait_until(lambda: queue_size(server) == 0)
        assert_serves(client)
        return process.memory_info().rss

    storm(20)  # warm-up
    first, second = storm(40), storm(40)  # 100 cycles in all
    assert second < first * 1.05
    assert queue_size(server) == 0


def test_B14_a_model_load_waits_for_the_running_generation(server, client):
    other = connect(server)
    running = generate(client, model=SLOW_MODEL, max_new_tokens=60)
    wait_until(lambda: is_running(running))
    load = other.submit("playground-4m (bundled)", 96, api_name="/load_model")
    info, _ = load.result(timeout=120)
    loaded_at = time.time()
    result = running.result()
    assert "**playground-4m (bundled)**" in info
    assert result["model"] == SLOW_MODEL and result["timing"]["tokens"] == 60  # finished on the model it began with
    assert loaded_at >= result["timing"]["finished_at"]  # the load waited for the generation
    other.close()
    assert_serves(client)


def test_E5_a_model_load_queued_among_generations_keeps_its_turn(server, client):
    others = [connect(server) for _ in range(3)]
    first = generate(client, model=SLOW_MODEL, max_new_tokens=40)
    wait_until(lambda: is_running(first))
    before = generate(others[0], max_new_tokens=8)
    time.sleep(0.2)
    load = others[1].submit("playground-4m (bundled)", 96, api_name="/load_model")
    time.sleep(0.2)
    after = generate(others[2], model="playground-4m (bundled)", max_new_tokens=8)
    load.result(timeout=120)
    loaded_at = time.time()
    assert first.result()["timing"]["tokens"] == 40 and before.result()["timing"]["tokens"] == 8
    assert loaded_at >= before.result()["timing"]["finished_at"]  # the load took its turn behind both
    assert after.result()["model"] == "playground-4m (bundled)" and after.result()["timing"]["tokens"] == 8
    for other in others:
        other.close()
    assert_serves(client)
