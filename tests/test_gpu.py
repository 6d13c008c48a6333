"""The accelerator path on a CUDA device (skipped without one; benchmarks/gpu_check.sh runs these on a lent GPU):
the CUDA-graph image decoder that `generate()` uses by default, transformers' compiled static-cache loop, the compiled
training step (inductor), bf16 autocast with a fused AdamW step."""

import os

import pytest
import torch
from transformers import CompileConfig, StaticCache

from modeling_igpt import generation_igpt


# IGPT_GPU_TEST_DEVICE=cpu rehearses the file on a CPU (gpu_check.sh --device cpu): the tests of CUDA graphs are
# skipped there (tests/test_generation_igpt.py runs the same decoder's steps eagerly on the CPU), the others run.
DEVICE = os.environ.get("IGPT_GPU_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")
needs_cuda_graphs = pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a CUDA device")

CLUSTERS = 16  # tests/conftest.py: 16 colours + the start token, 6 x 6 positions
POSITIONS = 36


@pytest.fixture
def small_buckets(monkeypatch):
    monkeypatch.setattr(generation_igpt, "GRAPH_BUCKET", 8)  # 36 positions: 5 graphs, the last one shorter


@needs_cuda_graphs
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_default_generate_replays_cuda_graphs_token_identically_to_transformers_loop(
    attn_implementation, small_buckets, tiny_model, image_tokens
):
    model = tiny_model(attn_implementation=attn_implementation).to(DEVICE)
    prompt = image_tokens(4, length=5).to(DEVICE)
    expected = model.generate(prompt, max_new_tokens=POSITIONS - 4, do_sample=False, cache_implementation="dynamic")
    first = model.generate(prompt, max_new_tokens=POSITIONS - 4, do_sample=False)  # captures the graphs
    decoder = generation_igpt._graph_decoders[model]
    assert sorted(decoder.graphs) == [8, 16, 24, 32, 37]
    second = model.generate(prompt, max_new_tokens=POSITIONS - 4, do_sample=False)  # replays them
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert generation_igpt._graph_decoders[model] is decoder


@needs_cuda_graphs
def test_graphs_follow_in_place_weight_updates_and_new_weights_get_a_new_decoder(small_buckets, tiny_model):
    model = tiny_model().to(DEVICE)
    start = torch.full((2, 1), CLUSTERS, device=DEVICE)
    model.generate(start, do_sample=False)
    decoder = generation_igpt._graph_decoders[model]
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.5)  # in place: the captured graphs read the same storage
    expected = model.generate(start, do_sample=False, cache_implementation="dynamic")
    assert torch.equal(model.generate(start, do_sample=False), expected)
    assert generation_igpt._graph_decoders[model] is decoder
    model.load_state_dict({k: v.clone() * 0.5 for k, v in model.state_dict().items()}, assign=True)  # new storage
    expected = model.generate(start, do_sample=False, cache_implementation="dynamic")
    assert torch.equal(model.generate(start, do_sample=False), expected)
    assert generation_igpt._graph_decoders[model] is not decoder


def test_greedy_samples_match_imagegpt_on_cuda(imagegpt_pair):
    reference, ours = (model.to(DEVICE) for model in imagegpt_pair())
    start = torch.full((8, 1), CLUSTERS, device=DEVICE)
    expected = reference.generate(start, max_length=POSITIONS + 1, do_sample=False)
    assert torch.equal(ours.generate(start, do_sample=False), expected)


def test_transformers_compiled_static_cache_generate_is_token_identical(tiny_model):
    """transformers' own accelerator path: a StaticCache, the forward compiled with CUDA graphs ("reduce-overhead").
    A dict output keeps the request in transformers' loop (a plain one goes to IGPT's decoder)."""
    model = tiny_model().to(DEVICE)
    start = torch.full((3, 1), CLUSTERS, device=DEVICE)
    eager = model.generate(start, do_sample=False, cache_implementation="dynamic")
    compiled = model.generate(
        start, do_sample=False, cache_implementation="static", return_dict_in_generate=True,
        compile_config=CompileConfig(fullgraph=True, mode="reduce-overhead"),
    )  # fmt: skip
    assert isinstance(compiled.cache, StaticCache)
    assert torch.equal(compiled.sequences, eager)


def test_compiled_training_step_matches_eager(tiny_model, image_tokens):
    model = tiny_model().to(DEVICE).train()
    tokens = image_tokens(4).to(DEVICE)
    eager_loss = model(tokens, labels=tokens).loss
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)  # inductor: generated Triton kernels
    compiled_loss = compiled(tokens, labels=tokens).loss
    compiled_grads = torch.autograd.grad(compiled_loss, list(model.parameters()))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-3, atol=1e-5)


def test_bf16_autocast_loss_and_fused_adamw_step(tiny_model, image_tokens):
    model = tiny_model().to(DEVICE).train()
    tokens = image_tokens(4).to(DEVICE)
    fp32_loss = model(tokens, labels=tokens).loss.detach()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    before = [param.detach().clone() for param in model.parameters()]
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        output = model(tokens, labels=tokens)
    assert output.logits.dtype == torch.bfloat16 and output.loss.dtype == torch.float32
    torch.testing.assert_close(output.loss.detach(), fp32_loss, rtol=2e-2, atol=0.0)
    output.loss.backward()
    optimizer.step()
    assert all(torch.isfinite(param).all() for param in model.parameters())
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))
