"""transformers' generate() features on IGPT, each checked against transformers' ImageGPT with the same weights, or
against IGPT's own greedy decoding / a hand-written loop without cache where ImageGPT is not a reference.

MTP (`generate(use_mtp=True)`) does not apply: it drafts with extra multi-token-prediction layers trained with the
model (`config.num_mtp_layers`); neither IGPT nor ImageGPT has any, and both refuse it with the same clear error.
"""

import warnings

import pytest
import torch

from modeling_igpt import IGPTConfig, IGPTForCausalImageModeling


CLUSTERS = 16  # the ImageGPT pairs and images of tests/conftest.py: 16 colours + the start token
START = CLUSTERS
POSITIONS = 25  # a 5 x 5 image


@pytest.fixture(scope="module")
def pair(imagegpt_pair):
    """(ImageGPT, IGPT) with the same random weights (the paper init zeroes the head: every comparison would tie)."""
    return imagegpt_pair(n_positions=POSITIONS)


def uncached_greedy(model, tokens: torch.LongTensor, new_tokens: int) -> torch.LongTensor:
    """The oracle: the whole sequence through the model at every step, no cache."""
    for _ in range(new_tokens):
        logits = model(tokens, use_cache=False).logits[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens


def both(pair, seed: int | None = None, **options):
    outputs = []
    for model in pair:
        if seed is not None:
            torch.manual_seed(seed)
        outputs.append(model.generate(**options))
    return outputs


def test_config_declares_special_tokens_generate_reads(pair):
    config = pair[1].config
    assert config.bos_token_id == START
    assert config.eos_token_id is None and config.pad_token_id is None
    assert IGPTConfig.from_dict(config.to_dict()).eos_token_id is None


def test_beam_search_matches_imagegpt(pair, image_tokens):
    prompt = image_tokens(2, 4)
    reference, ours = both(pair, input_ids=prompt, num_beams=3, do_sample=False, max_new_tokens=6)
    assert torch.equal(ours, reference)


def test_beam_search_dict_output_matches_imagegpt(pair, image_tokens):
    prompt = image_tokens(2, 4)
    options = dict(num_beams=3, num_return_sequences=2, do_sample=False, max_new_tokens=6, output_scores=True)
    reference, ours = both(pair, input_ids=prompt, return_dict_in_generate=True, **options)
    assert torch.equal(ours.sequences, reference.sequences)
    torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(ours.scores), torch.stack(reference.scores), rtol=1e-5, atol=1e-5)


def test_beam_sampling_matches_imagegpt_under_the_same_seed(pair, image_tokens):
    prompt = image_tokens(2, 4)
    reference, ours = both(pair, seed=3, input_ids=prompt, num_beams=3, do_sample=True, top_k=8, max_new_tokens=6)
    assert torch.equal(ours, reference)


def test_assisted_decoding_gives_greedy_tokens(pair, image_tokens):
    """The assistant drafts, IGPT verifies: the tokens must be IGPT's greedy ones, whatever the assistant proposes."""
    _, ours = pair
    torch.manual_seed(1)
    assistant = IGPTForCausalImageModeling(
        IGPTConfig(vocab_size=CLUSTERS + 1, max_position_embeddings=POSITIONS, hidden_size=16, num_hidden_layers=1,
                   num_attention_heads=2)
    ).eval()  # fmt: skip
    with torch.no_grad():
        assistant.lm_head.weight.normal_(0.0, 0.5)
    prompt = image_tokens(1, 4)
    assisted = ours.generate(prompt, assistant_model=assistant, do_sample=False, max_new_tokens=10)
    assert torch.equal(assisted, uncached_greedy(ours, prompt, 10))
    self_assisted = ours.generate(prompt, assistant_model=ours, do_sample=False, max_new_tokens=10)
    assert torch.equal(self_assisted, assisted)


def test_generation_from_inputs_embeds_matches_imagegpt_and_continues(pair, image_tokens):
    reference, ours = pair
    prompt = image_tokens(2, 4)
    embeds = ours.get_input_embeddings()(prompt)
    from_ids = uncached_greedy(ours, prompt, 6)
    with torch.no_grad():
        expected = reference.generate(inputs_embeds=embeds, do_sample=False, max_new_tokens=6)
        generated = ours.generate(inputs_embeds=embeds, do_sample=False, max_new_tokens=6)
    assert torch.equal(generated, expected)  # only the new tokens come back, as for any decoder-only model
    assert torch.equal(generated, from_ids[:, 4:])
    # Continue: three tokens from the embeddings, keep the cache, then three more from the longer embeddings.
    first = ours.generate(inputs_embeds=embeds, do_sample=False, max_new_tokens=3, return_dict_in_generate=True)
    longer = torch.cat([embeds, ours.get_input_embeddings()(first.sequences)], dim=1)
    cache_length = first.cache.get_seq_length()
    second = ours.generate(inputs_embeds=longer, cache=first.cache, do_sample=False, max_new_tokens=3)
    assert cache_length == 4 + 3 - 1  # the last drawn token was never fed
    assert torch.equal(torch.cat([first.sequences, second], dim=1), from_ids[:, 4:])


def test_left_padding_matches_imagegpt_and_unpadded_rows(pair, image_tokens):
    reference, ours = pair
    short, long = image_tokens(1, 3, seed=1), image_tokens(1, 5, seed=2)
    batch = torch.cat([torch.cat([torch.zeros(1, 2, dtype=torch.long), short], dim=1), long])  # (2, 5)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    reference_out, ours_out = both(pair, input_ids=batch, attention_mask=mask, do_sample=False, max_new_tokens=6)
    assert torch.equal(ours_out, reference_out)
    assert torch.equal(ours_out[0, 2:], uncached_greedy(ours, short, 6)[0])  # padding changed nothing
    assert torch.equal(ours_out[1], uncached_greedy(ours, long, 6)[0])


def test_logits_to_keep_matches_the_full_forward_and_generate_uses_it(pair, image_tokens):
    _, ours = pair
    tokens = image_tokens(2, 9)
    with torch.no_grad():
        full = ours(tokens).logits
        last_two = ours(tokens, logits_to_keep=2).logits
    assert last_two.shape == (2, 2, CLUSTERS)
    torch.testing.assert_close(last_two, full[:, -2:])
    seen = []
    hook = ours.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("logits_to_keep")), with_kwargs=True)
    try:
        generated = ours.generate(tokens, do_sample=False, max_new_tokens=3)
    finally:
        hook.remove()
    assert seen and all(keep == 1 for keep in seen)  # generate() asks for the last position only
    assert torch.equal(generated, uncached_greedy(ours, tokens, 3))


def test_static_cache_compiled_generation_matches_uncached_loop(pair, image_tokens):
    """IGPT's compiled static-cache decoding (on the CPU: generation_igpt.decode_images) against the oracle.

    Not against ImageGPT: its own static-cache generate disagrees with its dynamic-cache greedy tokens (transformers
    5.24, this tiny model), so it is no reference for this feature. tests/test_compile.py covers transformers' own
    fixed-shape compiled path on IGPT.
    """
    _, ours = pair
    prompt = image_tokens(2, 3)
    decoded = ours.generate(prompt, do_sample=False, max_length=POSITIONS + 1, cache_implementation="static")
    assert torch.equal(decoded, uncached_greedy(ours, prompt, POSITIONS + 1 - 3))


def test_mtp_is_refused_as_by_imagegpt(pair, image_tokens):
    messages = []
    for model in pair:
        with pytest.raises(ValueError, match="num_mtp_layers") as error:
            model.generate(image_tokens(1, 3), use_mtp=True, max_new_tokens=2)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_past_key_values_is_the_deprecated_name_of_cache(pair, image_tokens):
    """The old name works (with a FutureWarning, as on ImageGPT); before, it vanished into **kwargs: a step without
    its cache, last-position logits off by ~10."""
    _, ours = pair
    tokens = image_tokens(2, 10)
    with torch.no_grad():
        full = ours(tokens).logits[:, -1]
        prefix = ours(tokens[:, :-1], use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            step = ours(tokens[:, -1:], past_key_values=prefix.cache, use_cache=True)
        trunk_prefix = ours.transformer(tokens[:, :-1], use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            trunk_step = ours.transformer(tokens[:, -1:], past_key_values=trunk_prefix.cache, use_cache=True)
    torch.testing.assert_close(step.logits[:, -1], full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.lm_head(trunk_step.last_hidden_state[:, -1]), full, rtol=1e-5, atol=1e-5)


def test_unused_keywords_are_refused_by_name(pair, image_tokens):
    _, ours = pair
    tokens = image_tokens(2, 6)
    for call in (
        lambda: ours(tokens, token_type_ids=torch.zeros_like(tokens)),
        lambda: ours.transformer(tokens, token_type_ids=torch.zeros_like(tokens)),
        lambda: ours(tokens, head_mask=torch.ones(2)),
    ):
        with pytest.raises(ValueError, match="token_type_ids|head_mask"):
            call()
    with pytest.raises(ValueError, match="token_type_ids"):
        ours.generate(tokens, token_type_ids=torch.zeros_like(tokens), max_new_tokens=2, do_sample=False)


def test_keywords_generate_and_trainer_pass_are_still_accepted(pair, image_tokens):
    """What **kwargs is for: generate()'s output flags, Trainer's num_items_in_batch (into the loss)."""
    _, ours = pair
    tokens = image_tokens(2, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning on the current names
        output = ours.generate(
            tokens, do_sample=False, max_new_tokens=2, return_dict_in_generate=True, output_hidden_states=True
        )
    assert len(output.hidden_states) == 2
    mean = ours(tokens, labels=tokens).loss
    summed = ours(tokens, labels=tokens, num_items_in_batch=torch.tensor(1)).loss
    torch.testing.assert_close(summed / (2 * 5), mean)  # 5 targets per row: the loss divided by what it was given


def test_greedy_dict_outputs_match_imagegpt(pair, image_tokens):
    """Scores, logits, per-step attentions and hidden states of generate(), eager attention on both sides."""
    reference, ours = pair
    prompt = image_tokens(2, 4)
    options = dict(
        do_sample=False, max_new_tokens=3, return_dict_in_generate=True, output_scores=True, output_logits=True,
        output_attentions=True, output_hidden_states=True,
    )  # fmt: skip
    implementations = [model.config._attn_implementation for model in pair]
    for model in pair:
        model.set_attn_implementation("eager")
    try:
        expected, actual = reference.generate(prompt, **options), ours.generate(prompt, **options)
    finally:
        for model, implementation in zip(pair, implementations):
            model.set_attn_implementation(implementation)
    assert torch.equal(actual.sequences, expected.sequences)
    torch.testing.assert_close(torch.stack(actual.logits), torch.stack(expected.logits), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(actual.scores), torch.stack(expected.scores), rtol=1e-5, atol=1e-5)
    assert len(actual.attentions) == len(actual.hidden_states) == 3
    for step, (ours_step, reference_step) in enumerate(zip(actual.attentions, expected.attentions)):
        for got, want in zip(ours_step, reference_step):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"attentions at step {step}")
    assert [len(step) for step in actual.hidden_states] == [len(step) for step in expected.hidden_states]


def test_cache_format_and_continuing_from_a_returned_cache(pair, image_tokens):
    _, ours = pair
    prompt = image_tokens(2, 4)
    first = ours.generate(prompt, do_sample=False, max_new_tokens=3, return_dict_in_generate=True)
    cache = first.cache
    assert len(cache.layers) == ours.config.num_hidden_layers
    heads, head_dim = ours.config.num_attention_heads, ours.config.head_dim
    assert cache.layers[0].keys.shape == (2, heads, 4 + 3 - 1, head_dim)
    continued = ours.generate(first.sequences, cache=cache, do_sample=False, max_new_tokens=3)
    assert torch.equal(continued, uncached_greedy(ours, prompt, 6))
