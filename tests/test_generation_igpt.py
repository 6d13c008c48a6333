"""IGPT's CPU image decoder, the default loop of `generate()` on the CPU (through `custom_generate`): same tokens as
transformers' loop, one compiled graph for every position, fallbacks for what it does not cover, clear errors."""

import functools
import logging
from unittest import mock

import pytest
import torch
from transformers import DynamicCache, StaticCache
from transformers.generation.streamers import BaseStreamer
from transformers.utils import logging as transformers_logging

import modeling_igpt.generation_igpt as generation
import modeling_igpt.modeling_igpt as modeling
from modeling_igpt.generation_igpt import IGPTPrefixCache, decode_images


CLUSTERS = 16  # the tiny models and images of tests/conftest.py: 16 colours + the start token, 6 x 6 positions
POSITIONS = 36


def spy_on_decoder():
    return mock.patch.object(modeling, "decode_images", wraps=modeling.decode_images)


@pytest.fixture
def compile_short_requests(monkeypatch):
    """The decoder compiles only long requests; these tiny images are short."""
    monkeypatch.setattr(generation, "MIN_NEW_TOKENS_TO_COMPILE", 0)


TRANSFORMERS_LOOP = dict(cache_implementation="dynamic")  # a public way to keep transformers' loop


def test_prefix_cache_returns_the_filled_positions_and_matches_an_uncached_forward(tiny_model, image_tokens):
    model = tiny_model()
    tokens = image_tokens(2, POSITIONS)
    cache = IGPTPrefixCache(model.config, max_cache_len=POSITIONS + 1)
    with torch.no_grad():
        full = model(tokens, use_cache=False).logits
        chunks = [model(tokens[:, :10], cache=cache, use_cache=True).logits]  # prompt
        chunks.append(model(tokens[:, 10:20], cache=cache, use_cache=True).logits)  # a second chunk: causal mask
        chunks += [model(tokens[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(20, POSITIONS)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full)
    assert cache.get_seq_length() == POSITIONS
    assert cache.layers[0].keys.shape[2] == POSITIONS + 1  # preallocated ...
    keys, _ = IGPTPrefixCache(model.config, 8).update(torch.ones(2, 4, 3, 8), torch.ones(2, 4, 3, 8), layer_idx=0)
    assert keys.shape == (2, 4, 3, 8)  # ... but only the filled prefix is handed to attention
    cache.crop(-4)  # transformers' convention: drop the last 4 positions
    assert cache.get_seq_length() == POSITIONS - 4
    with pytest.raises(ValueError, match="negative number of positions"):
        cache.crop(3)



def test_default_generate_decodes_token_identically_with_one_graph_for_every_length(
    compile_short_requests, tiny_model, image_tokens
):
    model = tiny_model()
    with spy_on_decoder() as decoder:
        for batch, length in ((3, 1), (2, 12)):  # a whole image, then a completion of a larger prefix
            prompt = image_tokens(batch, length)
            expected = model.generate(prompt, do_sample=False, **TRANSFORMERS_LOOP)  # not the decoder
            if batch == 2:  # everything about this call was seen before: compiling again would be a bug
                torch.compiler.set_stance("fail_on_recompile")
            try:
                decoded = model.generate(prompt, do_sample=False)  # default settings: the decoder
            finally:
                torch.compiler.set_stance("default")
            assert torch.equal(decoded, expected)
    assert decoder.call_count == 2
    assert model in generation._compiled_steps  # compiled on first use, for this model
    with spy_on_decoder() as decoder:  # the spelling that asked for it before keeps working
        assert torch.equal(model.generate(prompt, do_sample=False, cache_implementation="static"), decoded)
    assert decoder.call_count == 1


def test_compiled_decoder_sees_new_weights(compile_short_requests, tiny_model, image_tokens):
    """The decoder skips Dynamo's guards after two checked steps; parameters are graph inputs, so updates count."""
    model = tiny_model()
    prompt = image_tokens(2, 1)
    model.generate(prompt, do_sample=False)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
        model.transformer.h[0].mlp.c_fc.weight.mul_(-1.0)
    decoded = model.generate(prompt, do_sample=False)
    assert torch.equal(decoded, model.generate(prompt, do_sample=False, **TRANSFORMERS_LOOP))


def test_short_requests_run_the_decoder_eagerly(tiny_model, image_tokens):
    model = tiny_model()
    with mock.patch.object(generation, "compiled_decode_step", wraps=generation.compiled_decode_step) as compiled:
        decoded = model.generate(image_tokens(2, 3), max_new_tokens=8, do_sample=False)
    assert compiled.call_count == 0
    expected = model.generate(image_tokens(2, 3), max_new_tokens=8, do_sample=False, **TRANSFORMERS_LOOP)
    assert torch.equal(decoded, expected)


def test_sampling_matches_transformers_loop_under_the_same_seed_and_streams_every_token(tiny_model, image_tokens):
    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.view(value.shape[0], -1))

        def end(self):
            self.ended = True

    model = tiny_model()
    prompt = image_tokens(3, 5)
    options = dict(do_sample=True, top_k=6, temperature=0.8)
    torch.manual_seed(7)
    expected = model.generate(prompt, **options, **TRANSFORMERS_LOOP)
    streamer = Collect()
    torch.manual_seed(7)
    with spy_on_decoder() as decoder:
        sampled = model.generate(prompt, disable_compile=True, streamer=streamer, **options)
    assert decoder.call_count == 1
    assert sampled.shape == (3, POSITIONS + 1)
    assert torch.equal(sampled, expected)
    assert streamer.ended and torch.equal(torch.cat(streamer.chunks, dim=1), sampled)


@pytest.mark.parametrize(
    "options",
    [
        dict(return_dict_in_generate=True),  # scores, hidden states ... are transformers' business
        dict(max_time=60.0),  # a stopping criterion other than the length
        dict(attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]])),  # padding
        dict(cache=DynamicCache()),  # a cache the caller wants filled
        dict(num_beams=2),
        dict(use_cache=False),
        TRANSFORMERS_LOOP,
    ],
    ids=["dict-output", "max-time", "padding", "cache", "beams", "no-cache", "dynamic-cache"],
)
def test_requests_the_decoder_does_not_cover_go_through_transformers(options, tiny_model, image_tokens):
    model = tiny_model()
    prompt = image_tokens(2, 3)
    with spy_on_decoder() as decoder:
        output = model.generate(prompt, max_new_tokens=4, do_sample=False, **options)
    assert decoder.call_count == 0
    sequences = output.sequences if isinstance(output, dict) else output
    assert sequences.shape == (2, 7)


def test_decoder_as_custom_generate_refuses_what_it_does_not_serve(tiny_model, image_tokens):
    model = tiny_model()
    prompt = image_tokens(2, 3)
    padded = dict(attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]))
    with pytest.raises(ValueError, match="attention mask with padding"):
        model.generate(prompt, max_new_tokens=4, do_sample=False, custom_generate=decode_images, **padded)
    with pytest.raises(ValueError, match="MaxTimeCriteria"):
        model.generate(prompt, max_new_tokens=4, do_sample=False, custom_generate=decode_images, max_time=60.0)
    served = model.generate(prompt, max_new_tokens=4, do_sample=False, custom_generate=decode_images)
    assert torch.equal(served, model.generate(prompt, max_new_tokens=4, do_sample=False, **TRANSFORMERS_LOOP))


def test_too_long_request_is_a_clear_error(tiny_model, image_tokens):
    model = tiny_model()
    with pytest.raises(ValueError, match="Sequence too long"):
        model.generate(image_tokens(1, 1), max_length=POSITIONS + 5, disable_compile=True)


def test_default_length_is_a_whole_image_and_max_new_tokens_alone_logs_no_length_clash(
    caplog, tiny_model, image_tokens
):
    model = tiny_model()
    assert model.generate(do_sample=False).shape == (1, POSITIONS + 1)  # start token + every pixel
    assert model.generate(image_tokens(2, 12), do_sample=False).shape == (2, POSITIONS + 1)  # the rest of the image
    transformers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            generated = model.generate(image_tokens(2, 3), max_new_tokens=4, do_sample=False)
    finally:
        transformers_logging.disable_propagation()
    assert generated.shape == (2, 7)
    assert not [record for record in caplog.records if "max_length" in record.getMessage()]


def test_trunk_skips_the_mask_only_for_caches_that_hand_back_exactly_the_filled_positions(tiny_model, image_tokens):
    model = tiny_model()
    config = model.config
    sees_every_key = model.transformer.sees_every_cached_key
    filled = DynamicCache(config=config)
    model(image_tokens(1, 5), cache=filled, use_cache=True)
    assert sees_every_key(filled, None, 5, 1)
    assert not sees_every_key(filled, torch.ones(1, 6), 5, 1)  # a mask from the caller is the caller's
    assert not sees_every_key(filled, None, 5, 2)  # two new tokens: causal among themselves
    static = StaticCache(config=config, max_cache_len=POSITIONS)
    model(image_tokens(1, 5), cache=static, use_cache=True)
    assert not sees_every_key(static, None, static.get_seq_length(), 1)  # unfilled slots must be masked
    prefix = IGPTPrefixCache(config, POSITIONS + 1)
    model(image_tokens(1, 5), cache=prefix, use_cache=True)
    assert sees_every_key(prefix, None, 5, 1)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_cuda_decoder_steps_run_eagerly_decode_token_identically(
    attn_implementation, monkeypatch, tiny_model, image_tokens
):
    """The CUDA decoder without its graphs, here on the CPU: positions written from a device tensor, attention over a
    bucket of slots under the additive mask. Only graph capture itself is left to tests/test_gpu.py."""
    monkeypatch.setattr(generation, "GRAPH_BUCKET", 8)  # 36 positions: 5 buckets, the last one shorter
    model = tiny_model(attn_implementation=attn_implementation)
    prompt = image_tokens(3, length=5)
    expected = model.generate(prompt, max_length=POSITIONS + 1, do_sample=False, **TRANSFORMERS_LOOP)
    sequences = prompt
    steps = generation.cuda_steps(model, prompt, POSITIONS + 1, use_graphs=False)
    logits = next(steps)
    for position in range(prompt.shape[1], POSITIONS + 1):
        next_tokens = logits.argmax(dim=-1)
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        if position < POSITIONS:
            logits = steps.send(next_tokens)
    assert torch.equal(sequences, expected)
    decoder = generation._graph_decoders[model]
    assert decoder.cache.layers[0].keys.shape[2] == POSITIONS + 1 and not decoder.graphs
