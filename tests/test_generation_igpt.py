"""IGPT's CPU image decoder behind `generate(cache_implementation="static")`: same tokens as transformers' loop,
one compiled graph for every position, fallbacks for what it does not cover, clear errors."""

from unittest import mock

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

import modeling_igpt.modeling_igpt as modeling
from modeling_igpt import IGPTConfig, IGPTForCausalImageModeling
from modeling_igpt.generation_igpt import IGPTPrefixCache


CLUSTERS = 16
START = CLUSTERS
POSITIONS = 36


def tiny_model(seed: int = 0) -> IGPTForCausalImageModeling:
    config = IGPTConfig(
        vocab_size=CLUSTERS + 1, max_position_embeddings=POSITIONS, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = IGPTForCausalImageModeling(config).eval()
    with torch.no_grad():  # the paper init zeroes the head, which would make every comparison trivial
        model.lm_head.weight.normal_(0.0, 0.5)
    return model


def prompts(batch: int, length: int, seed: int = 0) -> torch.LongTensor:
    pixels = torch.randint(0, CLUSTERS, (batch, length - 1), generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.full((batch, 1), START), pixels], dim=1)


def spy_on_decoder():
    return mock.patch.object(modeling, "decode_images", wraps=modeling.decode_images)


def test_prefix_cache_returns_the_filled_positions_and_matches_an_uncached_forward():
    model = tiny_model()
    tokens = prompts(2, POSITIONS)
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


def test_static_cache_greedy_decoding_is_token_identical_with_one_graph_for_every_length():
    model = tiny_model()
    with spy_on_decoder() as decoder:
        for batch, length in ((3, 1), (2, 12)):  # a whole image, then a completion of a larger prefix
            prompt = prompts(batch, length)
            expected = model.generate(prompt, max_length=POSITIONS + 1, do_sample=False)  # transformers' loop
            if batch == 2:  # everything about this call was seen before: compiling again would be a bug
                torch.compiler.set_stance("fail_on_recompile")
            try:
                decoded = model.generate(prompt, max_length=POSITIONS + 1, do_sample=False, cache_implementation="static")
            finally:
                torch.compiler.set_stance("default")
            assert torch.equal(decoded, expected)
    assert decoder.call_count == 2


def test_compiled_decoder_sees_new_weights():
    """The decoder skips Dynamo's guards after two checked steps; parameters are graph inputs, so updates count."""
    model = tiny_model()
    prompt = prompts(2, 1)
    model.generate(prompt, do_sample=False, cache_implementation="static")
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
        model.transformer.h[0].mlp.c_fc.weight.mul_(-1.0)
    decoded = model.generate(prompt, do_sample=False, cache_implementation="static")
    assert torch.equal(decoded, model.generate(prompt, do_sample=False))


def test_sampling_matches_transformers_loop_under_the_same_seed_and_streams_every_token():
    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.view(value.shape[0], -1))

        def end(self):
            self.ended = True

    model = tiny_model()
    prompt = prompts(3, 5)
    options = dict(do_sample=True, top_k=6, temperature=0.8, max_length=POSITIONS + 1)
    torch.manual_seed(7)
    expected = model.generate(prompt, **options)
    streamer = Collect()
    torch.manual_seed(7)
    with spy_on_decoder() as decoder:
        sampled = model.generate(
            prompt, cache_implementation="static", disable_compile=True, streamer=streamer, **options
        )
    assert decoder.call_count == 1
    assert torch.equal(sampled, expected)
    assert streamer.ended and torch.equal(torch.cat(streamer.chunks, dim=1), sampled)


@pytest.mark.parametrize(
    "options",
    [
        dict(return_dict_in_generate=True),  # scores, hidden states ... are transformers' business
        dict(max_time=60.0),  # a stopping criterion other than the length
        dict(attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]])),  # padding
    ],
    ids=["dict-output", "max-time", "padding"],
)
def test_requests_the_decoder_does_not_cover_go_through_transformers(options):
    model = tiny_model()
    prompt = prompts(2, 3)
    with spy_on_decoder() as decoder:
        output = model.generate(prompt, max_new_tokens=4, do_sample=False, cache_implementation="static", **options)
    assert decoder.call_count == 0
    sequences = output.sequences if isinstance(output, dict) else output
    assert sequences.shape == (2, 7)


def test_too_long_request_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="Sequence too long"):
        model.generate(prompts(1, 1), max_length=POSITIONS + 5, cache_implementation="static", disable_compile=True)
