"""IGPT held to the contract transformers' own models keep: our equivalents of the core of its common testers
(tests/test_configuration_common.py, tests/test_modeling_common.py; the generation ones are in
tests/test_generation_features.py), plus the bad inputs every model must refuse clearly.

Common tests that do not apply, by design:
- test_initialization (weights in a normal range, heads non-zero): the paper zero-initialises the token and class
  logits (tests/test_modeling_igpt.py::test_paper_initialisation checks that instead).
- test_resize_tokens_embeddings: the vocabulary is clusters + a start token (the last id), the heads predict clusters
  only; resizing would move the start token, so IGPT refuses it (test_resize_token_embeddings_is_refused).
- test_tied_weights / tie_word_embeddings: the paper unties the input and output matrices (the config refuses it).
- head masking, token_type_ids, encoder-decoder and cross-attention tests: IGPT has none of those inputs (refused).
- test_get_image_features (pixel_values in, pooled output out): IGPT reads token ids, not pixels; its probe
  features are `get_probe_features`, and no method carries the clashing name.
"""

import functools
import inspect
import json

import pytest
import torch
from transformers import ImageGPTConfig, ImageGPTForImageClassification
from transformers.modeling_outputs import ModelOutput

from modeling_igpt import (
    IGPTConfig,
    IGPTForCausalImageModeling,
    IGPTForImageClassification,
    IGPTForMaskedImageModeling,
    IGPTModel,
    model_inputs,
)
from modeling_igpt.convert_imagegpt import copy_weights, imagegpt_to_igpt_config


CLUSTERS = 16  # the tiny models of tests/conftest.py (2 layers of 4 heads, width 32) on 4 x 4 images, 3 classes
START = CLUSTERS
POSITIONS = 16
LAYERS = 2
HEADS = 4
WIDTH = 32

HEADS_BY_OBJECTIVE = [
    (IGPTModel, "autoregressive"),
    (IGPTModel, "bert"),
    (IGPTForCausalImageModeling, "autoregressive"),
    (IGPTForMaskedImageModeling, "bert"),
    (IGPTForImageClassification, "autoregressive"),
    (IGPTForImageClassification, "bert"),
]
IDS = [f"{cls.__name__}-{objective}" for cls, objective in HEADS_BY_OBJECTIVE]


@pytest.fixture(scope="session")
def tiny_config(tiny_config):
    return functools.partial(tiny_config, max_position_embeddings=POSITIONS, num_labels=3)


@pytest.fixture(scope="session")
def tiny_model(tiny_model):
    def build(model_class, objective="autoregressive", seed=0, **overrides):
        overrides = {"max_position_embeddings": POSITIONS, "num_labels": 3, **overrides}
        return tiny_model(model_class, seed, objective=objective, **overrides)

    return build


def tokens(batch=2, length=POSITIONS, seed=0) -> torch.LongTensor:
    pixels = torch.randint(0, CLUSTERS, (batch, length), generator=torch.Generator().manual_seed(seed))
    pixels[:, 0] = START
    return pixels


def image_pixels(batch=2, seed=0) -> torch.LongTensor:
    """Whole images' pixel ids, as the image processor makes them: what the classifier reads."""
    return torch.randint(0, CLUSTERS, (batch, POSITIONS), generator=torch.Generator().manual_seed(seed))


def inputs_for(model, batch=2, seed=0) -> dict:
    """Deterministic inputs: BERT heads get a fixed mask (they would draw a random one); the classifier gets whole
    images' pixel ids (it adds the start token itself)."""
    ids = image_pixels(batch, seed) if isinstance(model, IGPTForImageClassification) else tokens(batch, seed=seed)
    inputs = {"input_ids": ids}
    if model.config.objective == "bert" and not isinstance(model, IGPTModel):
        inputs["bool_masked_pos"] = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed + 1)) < 0.3
    return inputs


def main_output(output) -> torch.Tensor:
    return output.last_hidden_state if "last_hidden_state" in output else output.logits


# --- Configuration (test_configuration_common) --------------------------------------------------------------------


def test_config_common_properties_and_round_trips(tmp_path):
    config = IGPTConfig(vocab_size=CLUSTERS + 1, hidden_size=WIDTH, output_hidden_states=True, id2label={0: "a", 1: "b"})
    for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size", "max_position_embeddings"):
        assert hasattr(config, name)
    assert config.num_labels == 2 and config.output_hidden_states
    assert IGPTConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert json.loads(config.to_json_string())["hidden_size"] == WIDTH
    config.to_json_file(tmp_path / "config.json")
    assert IGPTConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved")
    assert IGPTConfig.from_pretrained(tmp_path / "saved").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "sub" / "folder")
    assert IGPTConfig.from_pretrained(tmp_path / "sub", subfolder="folder").to_dict() == config.to_dict()
    config.num_labels = 5
    assert len(config.id2label) == 5 and len(config.label2id) == 5
    assert IGPTConfig().num_hidden_layers == 24  # initialises without arguments (the paper's iGPT-S)


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (dict(num_attention_heads=0), "num_attention_heads must be positive"),
        (dict(intermediate_size=-4), "intermediate_size must be positive"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps must be > 0"),
        (dict(layer_norm_eps=-1e-5), "layer_norm_eps must be > 0"),
    ],
)
def test_bad_config_values_are_refused(overrides, problem, tiny_config):
    with pytest.raises(ValueError, match=problem):
        tiny_config(**overrides)


# --- Models (test_modeling_common) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class, objective", HEADS_BY_OBJECTIVE, ids=IDS)
def test_save_load_gives_the_same_outputs(tmp_path, model_class, objective, tiny_model):
    model = tiny_model(model_class, objective)
    inputs = inputs_for(model)
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(main_output(loaded(**inputs)), main_output(model(**inputs)), rtol=0, atol=0)


@pytest.mark.parametrize("model_class, objective", HEADS_BY_OBJECTIVE, ids=IDS)
def test_hidden_states_and_attentions_shapes_and_counts(model_class, objective, tiny_model):
    model = tiny_model(model_class, objective, attn_implementation="eager")
    inputs = inputs_for(model)
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(output.hidden_states) == LAYERS + 1
    assert all(state.shape == (2, POSITIONS, WIDTH) for state in output.hidden_states)
    assert len(output.attentions) == LAYERS
    assert all(weights.shape == (2, HEADS, POSITIONS, POSITIONS) for weights in output.attentions)
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(2, HEADS, POSITIONS))
    if objective == "autoregressive":  # nothing attends to the future
        assert torch.all(output.attentions[0].triu(diagonal=1) == 0)
    model.config.output_hidden_states = True  # the config's flags are the defaults
    model.config.output_attentions = True
    with torch.no_grad():
        output = model(**inputs)
    assert len(output.hidden_states) == LAYERS + 1 and len(output.attentions) == LAYERS


def test_classifier_honours_config_output_hidden_states_as_imagegpt_does():
    config = ImageGPTConfig(
        vocab_size=CLUSTERS + 1, n_positions=POSITIONS, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, num_labels=3
    )
    reference = ImageGPTForImageClassification(config).eval()
    ours = IGPTForImageClassification(imagegpt_to_igpt_config(config)).eval()
    copy_weights(reference, ours)
    pixels = image_pixels()
    ids = model_inputs(pixels, "autoregressive", START)  # ImageGPT is given the trunk's inputs; ours adds the start
    for flag in (None, True, False):  # None: the config decides
        reference.config.output_hidden_states = ours.config.output_hidden_states = True
        expected = reference(ids, output_hidden_states=flag).hidden_states
        actual = ours(pixels, output_hidden_states=flag).hidden_states
        assert (actual is None) == (expected is None), flag
        if expected is not None:
            assert len(actual) == len(expected)
            torch.testing.assert_close(actual[-1], expected[-1], rtol=1e-5, atol=1e-5)
    reference.config.output_hidden_states = ours.config.output_hidden_states = False
    assert ours(pixels).hidden_states is None and reference(ids).hidden_states is None


@pytest.mark.parametrize("model_class, objective", HEADS_BY_OBJECTIVE[2:], ids=IDS[2:])
def test_training_step_and_gradient_checkpointing_give_the_same_gradients(model_class, objective, tiny_model):
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model(model_class, objective).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        inputs = inputs_for(model)
        labels = torch.tensor([0, 2]) if model_class is IGPTForImageClassification else inputs["input_ids"]
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        assert torch.isfinite(loss)
        gradients.append({name: param.grad for name, param in model.named_parameters() if param.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and "transformer.wte.weight" in gradients[0]
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("model_class, objective", HEADS_BY_OBJECTIVE, ids=IDS)
def test_inputs_embeds_equal_the_input_ids_path(model_class, objective, tiny_model):
    model = tiny_model(model_class, objective)
    inputs = inputs_for(model)
    ids = inputs.pop("input_ids")
    trunk_ids = model_inputs(ids, objective, START) if model_class is IGPTForImageClassification else ids
    embeds = model.get_input_embeddings()(trunk_ids)  # inputs_embeds are the trunk's inputs
    with torch.no_grad():
        from_ids = model(input_ids=ids, **inputs)
        from_embeds = model(inputs_embeds=embeds, **inputs)
    torch.testing.assert_close(main_output(from_embeds), main_output(from_ids))


@pytest.mark.parametrize("padded", [False, True], ids=["full", "left-padded"])
@pytest.mark.parametrize("model_class, objective", HEADS_BY_OBJECTIVE, ids=IDS)
def test_eager_and_sdpa_agree(model_class, objective, padded, tiny_model):
    if padded and model_class in (IGPTForMaskedImageModeling, IGPTForImageClassification):
        pytest.skip("these heads take no attention_mask (images have no padding)")
    outputs = []
    for implementation in ("eager", "sdpa"):
        model = tiny_model(model_class, objective, attn_implementation=implementation)
        inputs = inputs_for(model)
        if padded:
            inputs["attention_mask"] = torch.ones(2, POSITIONS, dtype=torch.long)
            inputs["attention_mask"][0, :3] = 0
        with torch.no_grad():
            outputs.append(main_output(model(**inputs)))
    if padded:  # compare real positions only: a padded query that sees no key is undefined in both
        outputs = [torch.cat([output[0, 3:], output[1]]) for output in outputs]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_bert_padding_mask_hides_the_padded_tokens(tiny_model):
    """A 2-D attention_mask on the bidirectional trunk: changing padded tokens changes no other position."""
    model = tiny_model(IGPTModel, "bert")
    mask = torch.ones(2, POSITIONS, dtype=torch.long)
    mask[:, -4:] = 0
    ids = tokens()
    changed = ids.clone()
    changed[:, -4:] = (changed[:, -4:] + 1) % CLUSTERS
    with torch.no_grad():
        first = model(ids, attention_mask=mask).last_hidden_state
        second = model(changed, attention_mask=mask).last_hidden_state
        unmasked = model(changed).last_hidden_state
    torch.testing.assert_close(second[:, :-4], first[:, :-4])
    assert not torch.allclose(unmasked[:, :-4], first[:, :-4])  # the mask is what made the difference


@pytest.mark.parametrize("model_class, objective", HEADS_BY_OBJECTIVE, ids=IDS)
def test_batching_equivalence(model_class, objective, tiny_model):
    model = tiny_model(model_class, objective)
    inputs = inputs_for(model, batch=3)
    with torch.no_grad():
        batched = main_output(model(**inputs))
        single = torch.cat([main_output(model(**{k: v[i : i + 1] for k, v in inputs.items()})) for i in range(3)])
    torch.testing.assert_close(single, batched, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_class, objective", HEADS_BY_OBJECTIVE, ids=IDS)
def test_return_dict_false_gives_the_same_tuple(model_class, objective, tiny_model):
    model = tiny_model(model_class, objective)
    inputs = inputs_for(model)
    with torch.no_grad():
        as_dict = model(**inputs, output_hidden_states=True)
        as_tuple = model(**inputs, output_hidden_states=True, return_dict=False)
    assert isinstance(as_dict, ModelOutput) and isinstance(as_tuple, tuple)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected)
    for actual, wanted in zip(as_tuple, expected):
        if isinstance(wanted, torch.Tensor):
            torch.testing.assert_close(actual, wanted)


@pytest.mark.parametrize("model_class", [IGPTModel, IGPTForCausalImageModeling, IGPTForMaskedImageModeling,
                                         IGPTForImageClassification])  # fmt: skip
def test_main_input_name_and_forward_signature(model_class):
    assert model_class.main_input_name == "input_ids"
    parameters = list(inspect.signature(model_class.forward).parameters)
    assert parameters[:2] == ["self", "input_ids"]
    assert "inputs_embeds" in parameters


def test_embeddings_accessors_and_resize_token_embeddings_is_refused(tiny_model):
    model = tiny_model(IGPTForCausalImageModeling)
    assert model.get_input_embeddings() is model.transformer.wte
    assert model.get_output_embeddings() is model.lm_head
    with pytest.raises(ValueError, match="does not resize"):
        model.resize_token_embeddings(CLUSTERS + 8)
    assert model.transformer.wte.num_embeddings == CLUSTERS + 1


def test_classifier_problem_types(tiny_model):
    model = tiny_model(IGPTForImageClassification, generative_loss_weight=0.0)
    ids = image_pixels()
    single = model(ids, labels=torch.tensor([0, 2]))
    model = tiny_model(IGPTForImageClassification, generative_loss_weight=0.0)  # the first loss fixes problem_type
    multi = model(ids, labels=torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    torch.testing.assert_close(
        multi.loss, torch.nn.functional.binary_cross_entropy_with_logits(multi.logits, multi.logits.new_tensor(
            [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))  # fmt: skip
    )
    torch.testing.assert_close(single.loss, torch.nn.functional.cross_entropy(single.logits, torch.tensor([0, 2])))
    regression = tiny_model(IGPTForImageClassification, generative_loss_weight=0.0, num_labels=1)
    output = regression(ids, labels=torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(output.loss, ((output.logits.squeeze(-1) - torch.tensor([0.5, -1.0])) ** 2).mean())


def test_get_image_features_does_not_clash_with_transformers(tiny_model):
    """transformers 5.x: get_image_features(pixel_values) -> pooled output. IGPT's probe features have their own name."""
    model = tiny_model(IGPTModel)
    assert not hasattr(model, "get_image_features")
    ids = tokens()
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
        torch.testing.assert_close(model.get_probe_features(ids, layers=-1), states[-1].mean(dim=1))


def test_deterministic_in_eval(tiny_model):
    model = tiny_model(IGPTForCausalImageModeling)
    with torch.no_grad():
        assert torch.equal(model(tokens()).logits, model(tokens()).logits)


# --- Bad inputs: a clear ValueError naming the problem ----------------------------------------------------------------


BAD_FORWARD_INPUTS = {
    "mask-too-short": (dict(attention_mask=torch.ones(2, POSITIONS - 3)), "attention_mask has shape"),
    "mask-too-long": (dict(attention_mask=torch.ones(2, POSITIONS + 20)), "attention_mask has shape"),
    "mask-3d": (dict(attention_mask=torch.ones(2, POSITIONS, POSITIONS)), "attention_mask has shape"),
    "mask-batch-1": (dict(attention_mask=torch.ones(1, POSITIONS)), "attention_mask has shape"),
    "ids-1d": (dict(input_ids=tokens()[0]), "input_ids must have shape"),
    "ids-bool": (dict(input_ids=tokens() > 3), "integer token ids"),
    "ids-float": (dict(input_ids=tokens().float()), "integer token ids"),
    "ids-empty": (dict(input_ids=tokens()[:, :0]), "empty"),
    "ids-out-of-range": (dict(input_ids=tokens() + CLUSTERS), "Token id .* is out of range"),
    "positions-beyond": (dict(input_ids=tokens()[:, :4], position_ids=torch.tensor([[10, 11, 12, POSITIONS]])),
                         "Position 16 is out of range"),  # fmt: skip
    "positions-shape": (dict(input_ids=tokens()[:, :4], position_ids=torch.arange(4)), "position_ids has shape"),
    "labels-1d": (dict(labels=tokens()[0]), "labels must have shape"),
    "too-long": (dict(input_ids=torch.cat([tokens(), tokens()], dim=1)), "Sequence too long"),
    "embeds-width": (dict(input_ids=None, inputs_embeds=torch.randn(2, 4, WIDTH + 1)), "inputs_embeds must have shape"),
    "unused-keyword": (dict(token_type_ids=torch.zeros(2, POSITIONS, dtype=torch.long)), "token_type_ids"),
}


@pytest.mark.parametrize("case", list(BAD_FORWARD_INPUTS))
def test_bad_forward_inputs_raise_a_clear_error(case, tiny_model):
    model = tiny_model(IGPTForCausalImageModeling)
    overrides, problem = BAD_FORWARD_INPUTS[case]
    inputs = {"input_ids": tokens(), **overrides}
    with pytest.raises(ValueError, match=problem):
        model(**inputs)


@pytest.mark.parametrize(
    "labels, problem",
    [
        (torch.tensor([0, 3]), "Label 3 is out of range"),
        (torch.tensor([-1, 0]), "Label -1 is out of range"),
        (torch.tensor([[0], [1]]), "labels must be class indices of shape"),
    ],
)
def test_bad_classifier_labels_raise_a_clear_error(labels, problem, tiny_model):
    model = tiny_model(IGPTForImageClassification)
    with pytest.raises(ValueError, match=problem):
        model(image_pixels(), labels=labels)
    assert model(image_pixels(), labels=torch.tensor([-100, 2])).loss.isfinite()  # -100 ignores an example


def test_classifier_inputs_embeds_with_labels(tiny_model):
    model = tiny_model(IGPTForImageClassification)
    embeds = model.get_input_embeddings()(model_inputs(image_pixels(), "autoregressive", START))
    with pytest.raises(ValueError, match="generative loss L_gen needs input_ids"):
        model(inputs_embeds=embeds, labels=torch.tensor([0, 1]))
    model.config.generative_loss_weight = 0.0
    expected = model(image_pixels(), labels=torch.tensor([0, 1])).loss
    torch.testing.assert_close(model(inputs_embeds=embeds, labels=torch.tensor([0, 1])).loss, expected)


def test_bert_mask_must_be_bool_and_an_empty_mask_gives_zero_loss(tiny_model):
    model = tiny_model(IGPTForMaskedImageModeling, "bert")
    ids = tokens()
    with pytest.raises(ValueError, match="bool_masked_pos must be a bool tensor"):
        model(ids, bool_masked_pos=(torch.rand(ids.shape) < 0.5).long())
    labels = ids.masked_fill(ids == START, -100)  # the start token is never a target
    nothing = torch.zeros(ids.shape, dtype=torch.bool)
    loss = model(ids, bool_masked_pos=nothing, labels=labels).loss  # no targets: 0, not 0/0 = NaN
    assert loss.item() == 0.0
    classifier = tiny_model(IGPTForImageClassification, "bert")
    pixel_ids = ids.clamp_max(CLUSTERS - 1)  # the classifier reads an image's pixel ids: no start token
    assert classifier(pixel_ids, bool_masked_pos=nothing, labels=torch.tensor([0, 1])).loss.isfinite()
    some = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.3
    output = model(ids, bool_masked_pos=some, labels=labels)
    scored = some & (labels != -100)
    expected = torch.nn.functional.cross_entropy(output.logits[scored], ids[scored])  # the mean over masked pixels
    torch.testing.assert_close(output.loss, expected)


def test_value_checks_read_no_values_off_the_cpu(tiny_model):
    """Ids, positions and labels are range-checked on CPU tensors only: on an accelerator reading them back would be
    a host-device synchronisation every step. Meta tensors stand in for accelerator ones (reading one raises)."""
    model = tiny_model(IGPTForImageClassification)
    meta_ids = torch.empty(2, 4, dtype=torch.long, device="meta")
    model.transformer.check_inputs(input_ids=meta_ids, position_ids=torch.empty(1, 4, dtype=torch.long, device="meta"))
    model.check_labels(torch.empty(2, dtype=torch.long, device="meta"), batch=2)
    with pytest.raises(ValueError, match="input_ids must have shape"):  # shapes are still checked: they cost nothing
        model.transformer.check_inputs(input_ids=torch.empty(4, dtype=torch.long, device="meta"))
    # The masked head's Trainer check (labels -100 off the mask) too: a whole BERT forward with loss runs on meta.
    bert = tiny_model(IGPTForMaskedImageModeling, objective="bert").to("meta")
    meta_mask = torch.empty(2, 4, dtype=torch.bool, device="meta")
    loss = bert(meta_ids, bool_masked_pos=meta_mask, labels=meta_ids, num_items_in_batch=torch.ones((), device="meta")).loss
    assert loss.device.type == "meta"


def test_load_with_another_number_of_labels(tmp_path, tiny_model):
    """Fine-tuning a checkpoint on another label set: the head is re-initialised, the trunk kept."""
    model = tiny_model(IGPTForImageClassification)
    model.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        IGPTForImageClassification.from_pretrained(tmp_path, num_labels=5)
    loaded = IGPTForImageClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert loaded.score.weight.shape == (5, WIDTH)
    assert torch.equal(loaded.score.weight, torch.zeros(5, WIDTH))  # the paper's zero-initialised head
    torch.testing.assert_close(loaded.transformer.wte.weight, model.transformer.wte.weight)


def test_gradients_reach_hidden_states_and_attentions(tiny_model):
    model = tiny_model(IGPTForCausalImageModeling, attn_implementation="eager").train()
    output = model(tokens(), output_hidden_states=True, output_attentions=True)
    output.hidden_states[0].retain_grad()
    output.attentions[0].retain_grad()
    output.logits.flatten()[0].backward()
    assert output.hidden_states[0].grad is not None and output.attentions[0].grad is not None
