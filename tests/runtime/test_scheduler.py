"""The scheduler against a fake model runner: batching, prefix reuse, chunking, retraction, abort."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from radixlm.radix_cache import RadixCache
from radixlm.runtime.batch_runner import BatchRunner
from radixlm.runtime.grammar_manager import GrammarManager
from radixlm.runtime.io_struct import AbortRequest, GenerateRequest, StateRequest
from radixlm.runtime.kv_manager import KVManager
from radixlm.runtime.output_builder import OutputBuilder
from radixlm.runtime.sampling_params import SamplingParams
from radixlm.runtime.scheduler import Scheduler
from radixlm.runtime.scheduler_config import SchedulerConfig
from tests.runtime.fake_model import EOS, VOCAB, FakeModelRunner, FakeTokenizer


def make_scheduler(
    max_total_tokens=4096,
    chunk_size=512,
    policy="lpm",
    disable_cache=False,
    max_running=64,
    overlap=False,
    mixed_chunk=False,
    **runner_kwargs,
) -> Scheduler:
    runner = FakeModelRunner(max_total_tokens=max_total_tokens, **runner_kwargs)
    kv = KVManager(
        runner.token_allocator,
        runner.req_to_token_pool,
        RadixCache(disabled=disable_cache),
        cache_enabled=not disable_cache,
    )
    config = SchedulerConfig(
        context_len=1024,
        vocab_size=VOCAB,
        max_running_requests=max_running,
        chunk_size=chunk_size,
        schedule_policy=policy,
        enable_overlap=overlap,
        enable_mixed_chunk=mixed_chunk,
    )
    batch_runner = BatchRunner(runner, FakeTokenizer(), [EOS], 1024, VOCAB)
    return Scheduler(config, kv, batch_runner, GrammarManager(None, None), OutputBuilder())


def request(rid: str, ids: list[int], max_new_tokens: int = 8, **params) -> GenerateRequest:
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, **params)
    return GenerateRequest(rid=rid, input_ids=ids, sampling=sampling)


def run_all(scheduler: Scheduler, requests: list[GenerateRequest], max_steps: int = 10_000):
    results: dict[str, dict] = {}
    for r in requests:
        scheduler.handle(r)
    for _ in range(max_steps):
        for update in scheduler.outputs.drain():
            entry = results.setdefault(update.rid, {"ids": []})
            entry["ids"] += update.new_output_ids
            entry["finish"] = update.finish
            entry["cached"] = update.cached_tokens
        if not scheduler.busy:
            break
        scheduler.step()
    for update in scheduler.outputs.drain():
        entry = results.setdefault(update.rid, {"ids": []})
        entry["ids"] += update.new_output_ids
        entry["finish"] = update.finish
        entry["cached"] = update.cached_tokens
    assert not scheduler.busy, "scheduler did not drain"
    return results


def prompts(n: int, length: int, shared: int = 0) -> list[list[int]]:
    prefix = [(7 * k) % (VOCAB - 2) + 2 for k in range(shared)]
    return [
        prefix + [(i * 13 + k * 5) % (VOCAB - 2) + 2 for k in range(length - shared)]
        for i in range(n)
    ]


def solo_outputs(ids_list, max_new_tokens=8, **kwargs):
    out = []
    for i, ids in enumerate(ids_list):
        res = run_all(make_scheduler(**kwargs), [request(f"r{i}", ids, max_new_tokens)])
        out.append(res[f"r{i}"]["ids"])
    return out


def assert_invariant(scheduler: Scheduler) -> None:
    state = scheduler.handle(StateRequest(request_id="x")).state
    assert state["ok"], state
    assert state["request_owned"] == 0


@pytest.mark.parametrize("policy", ["lpm", "fcfs"])
def test_concurrent_requests_match_solo_outputs(policy):
    ids_list = prompts(12, 20, shared=8)
    expected = solo_outputs(ids_list)
    scheduler = make_scheduler(policy=policy)
    results = run_all(scheduler, [request(f"r{i}", ids) for i, ids in enumerate(ids_list)])
    assert [results[f"r{i}"]["ids"] for i in range(12)] == expected
    assert all(results[f"r{i}"]["finish"].type == "length" for i in range(12))
    assert_invariant(scheduler)


def test_shared_prefix_is_reported_as_cached():
    scheduler = make_scheduler()
    first, second = prompts(2, 60, shared=50)
    run_all(scheduler, [request("a", first)])
    results = run_all(scheduler, [request("b", second)])
    assert results["b"]["cached"] >= 50
    assert_invariant(scheduler)


def test_disabled_cache_reuses_nothing_and_frees_everything():
    scheduler = make_scheduler(disable_cache=True)
    first, second = prompts(2, 60, shared=50)
    run_all(scheduler, [request("a", first)])
    results = run_all(scheduler, [request("b", second)])
    assert results["b"]["cached"] == 0
    state = scheduler.state()
    assert state["free"] == state["total"]


def test_chunked_prefill_gives_the_same_outputs():
    ids_list = prompts(4, 150)
    expected = solo_outputs(ids_list)
    scheduler = make_scheduler(chunk_size=32)
    results = run_all(scheduler, [request(f"r{i}", ids) for i, ids in enumerate(ids_list)])
    assert [results[f"r{i}"]["ids"] for i in range(4)] == expected
    assert_invariant(scheduler)


def test_mixed_chunk_decodes_running_requests_during_a_prefill_burst():
    ids_list = prompts(6, 100)
    expected = solo_outputs(ids_list, max_new_tokens=16)
    finished_at = {}  # pass count when each request finished
    for mixed in (False, True):
        scheduler = make_scheduler(chunk_size=32, mixed_chunk=mixed)
        for i, ids in enumerate(ids_list):
            scheduler.handle(request(f"r{i}", ids, 16))
        outputs: dict[str, list[int]] = {}
        while scheduler.busy:
            scheduler.step()
            for update in scheduler.outputs.drain():
                outputs.setdefault(update.rid, []).extend(update.new_output_ids)
                if update.finish is not None:
                    finished_at[mixed, update.rid] = scheduler.stats["forward_passes"]
        assert [outputs[f"r{i}"] for i in range(6)] == expected
        assert_invariant(scheduler)
    # 600 prompt tokens take 19 passes of 32. Unmixed, r0 waits for all of them, then decodes
    # its 15 more tokens; mixed, it decodes in every prefill pass after its own 4.
    assert finished_at[False, "r0"] == 19 + 15
    assert finished_at[True, "r0"] == 4 + 15
    assert finished_at[True, "r5"] == finished_at[False, "r5"]  # the last prompt still decides


def test_mixed_chunk_never_overcommits_the_kv_pool():
    ids_list = prompts(8, 40)
    expected = solo_outputs(ids_list, max_new_tokens=40)
    scheduler = make_scheduler(max_total_tokens=200, chunk_size=16, mixed_chunk=True)
    results = run_all(scheduler, [request(f"r{i}", ids, 40) for i, ids in enumerate(ids_list)])
    assert [results[f"r{i}"]["ids"] for i in range(8)] == expected
    assert_invariant(scheduler)


def test_kv_exhaustion_retracts_and_keeps_outputs():
    ids_list = prompts(8, 40)
    expected = solo_outputs(ids_list, max_new_tokens=40)
    # 8 requests x 80 tokens do not fit in 200 slots at once.
    scheduler = make_scheduler(max_total_tokens=200)
    results = run_all(scheduler, [request(f"r{i}", ids, 40) for i, ids in enumerate(ids_list)])
    assert scheduler.stats["retractions"] > 0
    assert [results[f"r{i}"]["ids"] for i in range(8)] == expected
    assert_invariant(scheduler)


def test_abort_frees_kv_and_keeps_partial_kv_out_of_the_cache():
    scheduler = make_scheduler()
    ids_list = prompts(3, 30)
    for i, ids in enumerate(ids_list):
        scheduler.handle(request(f"r{i}", ids, 50))
    for _ in range(5):
        scheduler.step()
    scheduler.handle(AbortRequest(rid="r1"))
    results = run_all(scheduler, [])
    assert results["r1"]["finish"].type == "abort"
    assert results["r0"]["finish"].type == "length" and results["r2"]["finish"].type == "length"
    # The finished requests' tokens are cached (30 prompt + 50 output - last, each); of the
    # aborted one only its prompt (complete, cached right after prefill), none of its decode KV.
    assert scheduler.kv.cache.total_size() == 2 * (30 + 49) + 30
    assert_invariant(scheduler)


def test_prefill_only_request_finishes_with_length_zero_and_caches_the_prompt():
    scheduler = make_scheduler()
    ids = prompts(1, 40)[0]
    results = run_all(scheduler, [request("p", ids, max_new_tokens=0)])
    assert results["p"]["ids"] == []
    assert results["p"]["finish"].type == "length" and results["p"]["finish"].length == 0
    again = run_all(scheduler, [request("q", ids + [5, 6], max_new_tokens=1)])
    assert again["q"]["cached"] >= 39


def test_eos_and_min_new_tokens():
    scheduler = make_scheduler(eos_every=25)
    ids = prompts(1, 20)[0]
    results = run_all(scheduler, [request("e", ids, 30)])
    assert results["e"]["finish"].type == "stop" and results["e"]["finish"].matched == EOS
    assert len(results["e"]["ids"]) == 6 and results["e"]["ids"][-1] == EOS  # from position 24
    results = run_all(scheduler, [request("m", ids, 30, min_new_tokens=10)])
    assert len(results["m"]["ids"]) >= 10 and EOS not in results["m"]["ids"][:10]


def test_stop_strings_and_stop_token_ids():
    scheduler = make_scheduler()
    ids = prompts(1, 20)[0]
    free = run_all(scheduler, [request("f", ids, 10)])["f"]["ids"]
    stop_text = f"<{free[3]}>"
    res = run_all(scheduler, [request("s", ids, 10, stop=(stop_text,))])["s"]
    first_hit = next(i for i, t in enumerate(free) if f"<{t}>" == stop_text)
    assert res["ids"] == free[: first_hit + 1]
    assert res["finish"].type == "stop" and res["finish"].matched == stop_text
    res = run_all(scheduler, [request("t", ids, 10, stop_token_ids=(free[2],))])["t"]
    assert res["ids"][-1] == free[2] and res["finish"].matched == free[2]


def test_forward_failure_fails_only_its_batch_and_the_loop_survives():
    scheduler = make_scheduler(fail_on_token=63)
    bad = [63] * 10
    good = prompts(1, 10)[0]
    results = run_all(scheduler, [request("bad", bad)])
    assert results["bad"]["finish"].type == "abort"
    results = run_all(scheduler, [request("good", good)])
    assert results["good"]["finish"].type == "length"
    assert_invariant(scheduler)


def test_sampling_failure_releases_exactly_the_pass_slots(monkeypatch):
    # The runner has already counted the pass's tokens when sampling fails: the scheduler must
    # not count them twice (it once freed slots the radix cache still held, and the next
    # integrity check killed the scheduler).
    scheduler = make_scheduler()
    shared = prompts(3, 40, shared=32)
    run_all(scheduler, [request("warm", shared[0])])
    sample = BatchRunner._sample

    def failing_sample(self, logits, sample_reqs):
        if any(req.rid == "bad" and req.output_ids for req, _ in sample_reqs):
            raise ValueError("sampler exploded")
        return sample(self, logits, sample_reqs)

    monkeypatch.setattr(BatchRunner, "_sample", failing_sample)
    results = run_all(scheduler, [request("bad", shared[1])])
    assert results["bad"]["finish"].type == "abort"
    assert_invariant(scheduler)
    results = run_all(scheduler, [request("again", shared[1]), request("good", shared[2])])
    assert [results["good"]["ids"]] == solo_outputs([shared[2]])
    assert_invariant(scheduler)


class _ShrinkingGrammar:
    """Allows one token for ``lives`` steps, then none: a grammar that dead-ends mid-output
    (a backend bug), to check it fails only its own request."""

    def __init__(self, lives: int) -> None:
        self.lives = lives

    def new_matcher(self) -> _ShrinkingGrammar:
        return _ShrinkingGrammar(self.lives)

    def fill_allowed_mask(self, out) -> None:
        if self.lives > 0:
            out[5] = True

    def accept_token(self, token_id: int) -> None:
        self.lives -= 1

    def is_accepting(self) -> bool:
        return False

    def is_terminated(self) -> bool:
        return False

    def jump_forward_tokens(self) -> list[int]:
        return []


class _ImmediateCompiler:
    def submit(self, spec):
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(_ShrinkingGrammar(lives=int(spec)))
        return future


def test_a_dead_end_grammar_fails_only_its_request():
    scheduler = make_scheduler()
    scheduler.grammars = GrammarManager(_ImmediateCompiler(), lambda kind, value: value)
    ids = prompts(2, 12)
    results = run_all(scheduler, [request("dead", ids[0], regex="3"), request("plain", ids[1])])
    assert [results["plain"]["ids"]] == solo_outputs([ids[1]])
    dead = results["dead"]
    assert dead["ids"] == [5, 5, 5]
    assert dead["finish"].type == "abort" and "allows no next token" in dead["finish"].message
    assert_invariant(scheduler)


class _SharedPendingCompiler:
    """Like GrammarCompiler, one shared future per spec; resolved by the test."""

    def __init__(self) -> None:
        self.futures: dict[str, Future] = {}

    def submit(self, spec: str) -> Future:
        return self.futures.setdefault(spec, Future())


def test_aborting_a_request_leaves_others_waiting_on_the_same_grammar_alone():
    scheduler = make_scheduler()
    compiler = _SharedPendingCompiler()
    scheduler.grammars = GrammarManager(compiler, lambda kind, value: value)
    ids = prompts(2, 12)
    scheduler.handle(request("aborted", ids[0], regex="100"))
    scheduler.handle(request("waiting", ids[1], regex="100"))
    scheduler.step()
    scheduler.handle(AbortRequest(rid="aborted"))
    # It was cancelled, and the other request answered 400 "invalid grammar: " (empty reason)
    assert not compiler.futures["100"].cancelled()
    compiler.futures["100"].set_result(_ShrinkingGrammar(lives=100))
    results = run_all(scheduler, [])
    assert results["aborted"]["finish"].type == "abort"
    assert results["waiting"]["ids"] == [5] * 8
    assert results["waiting"]["finish"].type == "length"
    assert_invariant(scheduler)


def test_invalid_request_is_rejected_with_a_reason():
    scheduler = make_scheduler()
    results = run_all(scheduler, [request("x", [VOCAB + 5])])
    assert results["x"]["finish"].type == "abort" and results["x"]["finish"].status_code == 400
    assert "outside the vocabulary" in results["x"]["finish"].message


def test_requests_sharing_a_prompt_prefix_compute_it_once():
    # All 16 arrive together: one computes the shared prefix, the rest reuse it from the cache
    # (inserted right after prefill, while the first request is still decoding).
    scheduler = make_scheduler(chunk_size=4096)
    ids_list = prompts(16, 120, shared=100)
    expected = solo_outputs(ids_list)
    results = run_all(scheduler, [request(f"r{i}", ids) for i, ids in enumerate(ids_list)])
    assert [results[f"r{i}"]["ids"] for i in range(16)] == expected
    assert sum(results[f"r{i}"]["cached"] >= 100 for i in range(16)) == 15
    prefill_tokens = scheduler.runner.model_runner.num_tokens - 16 * 7  # minus decode steps
    assert prefill_tokens == 100 + 16 * 20
    assert_invariant(scheduler)
