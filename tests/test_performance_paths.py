"""The model benchmark end to end at a tiny shape: every job runs, compiled paths included, and samples agree."""

import functools
import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import CompileConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_model  # noqa: E402


TINY = bench_model.Shape("tiny", layers=2, width=32, heads=4, batch=2, sample_batch=3, seq=24, clusters=16)
ONE_ROUND = bench_model.Plan(
    rounds=1, train_calls=1, feature_calls=1, sample_tokens=12, sample_rounds=1, cpu_memory=False
)


@pytest.fixture
def fast_compile(monkeypatch):
    """Compile with aot_eager (graph capture, no code generation) so the test stays quick on a CPU."""
    monkeypatch.setattr(bench_model.torch, "compile", functools.partial(bench_model.torch.compile, backend="aot_eager"))
    monkeypatch.setattr(bench_model, "CompileConfig", functools.partial(CompileConfig, backend="aot_eager"))


@pytest.fixture
def one_second_per_timing(monkeypatch):
    """The benchmark's clock advances by exactly 1 s per reading: every timed block then lasts 1 s."""
    monkeypatch.setattr(bench_model, "time", SimpleNamespace(perf_counter=functools.partial(next, itertools.count())))


def test_every_job_is_timed_and_greedy_samples_match_imagegpt(fast_compile, one_second_per_timing):
    result = bench_model.bench_shape(TINY, "cpu", ONE_ROUND, peak_flops=1e9, compile_ours=True)
    flops = bench_model.model_flops_per_token(TINY, bench_model.build_pair(TINY, "cpu")[1])
    # a timed block of `calls` calls lasts 1 s: tokens/s is the tokens those calls process
    for job, calls, flops_per_token in (
        ("training", ONE_ROUND.train_calls, flops), ("features", ONE_ROUND.feature_calls, flops / 3)
    ):  # fmt: skip
        for name in ("imagegpt", "igpt", "igpt_compiled"):
            assert result[job][name]["tokens_per_s"] == TINY.batch * TINY.seq * calls
            assert result[job][name]["mfu"] == pytest.approx(TINY.batch * TINY.seq * calls * flops_per_token / 1e9)
    # Sampling on the CPU: both sides on default settings (IGPT's image decoder), and IGPT in transformers' loop
    for name in ("igpt", "igpt_transformers_loop"):
        assert result["sampling"][name]["tokens_per_s"] == TINY.sample_batch * ONE_ROUND.sample_tokens
        assert result["sampling"][name]["token_identical_images"] == f"{TINY.sample_batch}/{TINY.sample_batch}"
    assert result["sampling"]["igpt"]["first_call_s"] == 1


def test_rates_are_median_tokens_per_second_and_ratios_are_per_round(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(bench_model, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    seconds_per_call = {  # 2 untimed warm-up calls, then 3 rounds of 2 calls
        "imagegpt": iter([9.0] * 2 + [1.0] * 6),
        "igpt": iter([9.0] * 2 + [0.25] * 2 + [0.5] * 2 + [0.1] * 2),
    }

    def job(name):
        def call():
            clock[0] += next(seconds_per_call[name])

        return call

    result = bench_model.alternate({name: job(name) for name in seconds_per_call}, 100, rounds=3, calls=2, device="cpu")
    assert result["imagegpt"]["rounds_tokens_per_s"] == [100.0, 100.0, 100.0]  # the 2 warm-up calls are not timed
    assert result["igpt"]["rounds_tokens_per_s"] == pytest.approx([400.0, 200.0, 1000.0])
    assert result["igpt"]["tokens_per_s"] == pytest.approx(400.0)  # the median round
    assert result["igpt"]["rounds_vs_imagegpt"] == pytest.approx([4.0, 2.0, 10.0])


def test_sampling_times_both_models_on_default_generate_settings(monkeypatch):
    """The comparison the README reports: no option on either side but the length and greedy decoding."""
    calls = []
    reference, ours = bench_model.build_pair(TINY, "cpu")
    for name, model in (("imagegpt", reference), ("igpt", ours)):

        def recorded(*args, _generate=model.generate, _name=name, **kwargs):
            calls.append((_name, kwargs))
            return _generate(*args, **kwargs)

        monkeypatch.setattr(model, "generate", recorded)
    bench_model.bench_sampling(TINY, reference, ours, "cpu", ONE_ROUND)
    options = {(name, tuple(sorted(kwargs))) for name, kwargs in calls if "cache_implementation" not in kwargs}
    assert options == {("imagegpt", ("do_sample", "max_length")), ("igpt", ("do_sample", "max_length"))}


def test_model_flops_count_matmul_weights_and_attention():
    reference, ours = bench_model.build_pair(TINY, "cpu")
    d, layers, vocab = TINY.width, TINY.layers, TINY.clusters + 1
    matmul_params = layers * (12 * d * d + 9 * d + 2 * d) + d + d * (vocab - 1)  # weights+biases+norms, ln_f, head
    assert bench_model.model_flops_per_token(TINY, ours) == 6 * matmul_params + 12 * layers * TINY.seq * d
    assert bench_model.model_flops_per_token(TINY, reference) == bench_model.model_flops_per_token(TINY, ours)
