"""Fast paths: torch.compile(fullgraph=True) of training and static-cache decoding, bf16 autocast, SDPA by default.

Graph capture is checked with the `aot_eager` backend (Dynamo + AOT autograd, no code generation), which fails on
the same graph breaks as inductor but compiles in seconds on a CPU.
"""

from unittest import mock

import torch
from transformers import StaticCache


CLUSTERS = 16  # the tiny models and images of tests/conftest.py: 16 colours, 6 x 6 positions
POSITIONS = 36


def test_sdpa_is_the_default_attention(tiny_model):
    assert tiny_model().config._attn_implementation == "sdpa"


def test_training_step_compiles_to_one_graph_with_eager_gradients(tiny_model, image_tokens):
    model = tiny_model().train()
    tokens = image_tokens(2)
    eager_loss = model(tokens, labels=tokens).loss
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # a graph break raises here
    compiled_loss = compiled(tokens, labels=tokens).loss
    compiled_grads = torch.autograd.grad(compiled_loss, list(model.parameters()))

    torch.testing.assert_close(compiled_loss, eager_loss)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad)


def test_static_cache_decode_step_compiles_to_one_graph(tiny_model, image_tokens):
    model = tiny_model().eval()
    tokens = image_tokens(2)
    prefill = 5
    cache = StaticCache(config=model.config, max_cache_len=POSITIONS)
    decode = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = model(tokens[:, : prefill + 2], use_cache=False).logits[:, prefill:]
        model(tokens[:, :prefill], cache=cache, use_cache=True)
        # Once with the position ids generate() passes, once deriving them from the cache length.
        step_one = decode(tokens[:, prefill : prefill + 1], cache=cache, position_ids=torch.tensor([[prefill]]))
        step_two = decode(tokens[:, prefill + 1 : prefill + 2], cache=cache)
    torch.testing.assert_close(torch.cat([step_one.logits, step_two.logits], dim=1), expected)


def test_transformers_compiled_static_cache_generate_is_token_identical_to_eager(tiny_model):
    """The path an accelerator takes (transformers' loop over a fixed-shape StaticCache, compiled forward; CUDA graphs
    there), run on the CPU. transformers compiles only on accelerators and has no public switch for the CPU, so the
    forward is compiled here; `cache_implementation="dynamic"` for the eager side and a dict output for the compiled
    side keep both in transformers' loop (a plain CPU request goes to IGPT's decoder, tests/test_generation_igpt.py).
    """
    model = tiny_model().eval()
    start = torch.full((3, 1), CLUSTERS)
    eager = model.generate(start, max_new_tokens=POSITIONS, do_sample=False, cache_implementation="dynamic")
    compiled_forward = torch.compile(model.forward, fullgraph=True, backend="aot_eager")  # a graph break raises
    with mock.patch.object(model, "forward", compiled_forward):
        compiled = model.generate(
            start, max_new_tokens=POSITIONS, do_sample=False, cache_implementation="static",
            return_dict_in_generate=True,
        )  # fmt: skip
    assert isinstance(compiled.cache, StaticCache)
    assert torch.equal(compiled.sequences, eager)


def test_bf16_autocast_keeps_softmax_and_loss_in_fp32(tiny_model, image_tokens):
    model = tiny_model().train()
    tokens = image_tokens(2)
    fp32_loss = model(tokens, labels=tokens).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(tokens, labels=tokens)
    assert output.logits.dtype == torch.bfloat16
    assert output.loss.dtype == torch.float32
    assert torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, fp32_loss, rtol=2e-2, atol=0.0)
    output.loss.backward()
    assert all(torch.isfinite(param.grad).all() for param in model.parameters())
