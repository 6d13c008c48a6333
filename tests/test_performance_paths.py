"""The model benchmark end to end at a tiny shape: every job runs, compiled paths included, and samples agree."""

import functools
import sys
from pathlib import Path

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


def test_every_job_is_timed_and_greedy_samples_match_imagegpt(fast_compile):
    result = bench_model.bench_shape(TINY, "cpu", ONE_ROUND, peak_flops=1e9, compile_ours=True)
    for job in ("training", "features"):
        for name in ("imagegpt", "igpt", "igpt_compiled"):
            assert result[job][name]["tokens_per_s"] > 0
    assert 0 < result["training"]["igpt"]["mfu"]
    # Sampling on the CPU: both sides on default settings (IGPT's image decoder), and IGPT in transformers' loop
    for name in ("igpt", "igpt_transformers_loop"):
        assert result["sampling"][name]["tokens_per_s"] > 0
        assert result["sampling"][name]["token_identical_images"] == f"{TINY.sample_batch}/{TINY.sample_batch}"
    assert "first_call_s" in result["sampling"]["igpt"]


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
