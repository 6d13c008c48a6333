"""Core model: parity with transformers' ImageGPT, objectives, cache, features, Trainer, bad input."""

import functools
import math
from unittest import mock

import pytest
import torch
from transformers import StaticCache, Trainer, TrainingArguments
from transformers.modeling_outputs import ImageClassifierOutput

from modeling_igpt import (
    IGPTConfig,
    IGPTForCausalImageModeling,
    IGPTForImageClassification,
    IGPTForMaskedImageModeling,
    IGPTModel,
)


CLUSTERS = 16  # the tiny models of tests/conftest.py: 16 colours + the start token, 6 x 6 positions
VOCAB = CLUSTERS + 1
START = CLUSTERS
POSITIONS = 36


@pytest.fixture(scope="session")
def tiny_config(tiny_config):
    """Three layers here: a middle layer to probe and pool, as well as the first and the last."""
    return functools.partial(tiny_config, num_hidden_layers=3)


@pytest.fixture(scope="session")
def imagegpt_pair(imagegpt_pair):
    def build(attn_implementation: str, head: str = "causal"):
        return imagegpt_pair(head, attn_implementation, n_layer=3, num_labels=5)

    return build


def pixels(batch: int = 2, length: int = POSITIONS, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CLUSTERS, (batch, length), generator=torch.Generator().manual_seed(seed))


def with_start(tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full((tokens.shape[0], 1), START), tokens[:, :-1]], dim=1)


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5):
    scale = expected.abs().max().clamp_min(1e-12)
    assert ((actual - expected).abs().max() / scale).item() <= rtol


# --- Parity with transformers' ImageGPT --------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_causal_logits_and_hidden_states_match_imagegpt(attn_implementation, imagegpt_pair):
    reference, ours = imagegpt_pair(attn_implementation)
    tokens = with_start(pixels())
    with torch.no_grad():
        expected = reference(tokens, output_hidden_states=True)
        actual = ours(tokens, output_hidden_states=True)
    assert actual.logits.shape == (2, POSITIONS, CLUSTERS)
    assert_close_relative(actual.logits, expected.logits)
    assert len(actual.hidden_states) == len(expected.hidden_states) == 4
    for ours_state, reference_state in zip(actual.hidden_states, expected.hidden_states):
        assert_close_relative(ours_state, reference_state)


def test_flex_attention_matches_eager(tiny_config, random_model):
    # flex_attention compiles its kernel (about 40 s on 2 CPU cores), hence one test for both objectives' masks.
    for objective in ("autoregressive", "bert"):
        eager = random_model(IGPTModel._from_config(tiny_config(objective=objective), attn_implementation="eager"))
        flex = IGPTModel._from_config(tiny_config(objective=objective), attn_implementation="flex_attention").eval()
        flex.load_state_dict(eager.state_dict())
        tokens = pixels()
        with torch.no_grad():
            assert_close_relative(flex(tokens).last_hidden_state, eager(tokens).last_hidden_state)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_classifier_logits_match_imagegpt(attn_implementation, imagegpt_pair):
    """IGPT's classifier reads an image's pixel ids and adds the start token itself (as the image-classification
    pipeline feeds it); transformers' ImageGPT classifier is given the same trunk inputs by hand."""
    reference, ours = imagegpt_pair(attn_implementation, head="classify")
    tokens = pixels()
    with torch.no_grad():
        assert_close_relative(ours(tokens).logits, reference(with_start(tokens)).logits)


def test_greedy_generate_matches_imagegpt_and_uncached_loop(imagegpt_pair):
    reference, ours = imagegpt_pair("sdpa")
    prompt = torch.full((3, 1), START)
    generated = ours.generate(prompt, max_new_tokens=POSITIONS, do_sample=False)
    expected = reference.generate(prompt, max_new_tokens=POSITIONS, do_sample=False)
    assert generated.shape == (3, POSITIONS + 1)
    assert torch.equal(generated, expected)
    # A loop without cache, re-reading the whole sequence each step (nanoGPT's generate).
    sequence = prompt
    with torch.no_grad():
        for _ in range(POSITIONS):
            next_token = ours(sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_token], dim=1)
    assert torch.equal(generated, sequence)


def test_unconditional_generate_starts_from_start_token_and_fills_the_image(imagegpt_pair):
    _, ours = imagegpt_pair("sdpa")
    samples = ours.generate(do_sample=True, top_k=5, temperature=0.9, num_return_sequences=2)
    assert samples.shape == (2, POSITIONS + 1)
    assert (samples[:, 0] == START).all() and (samples[:, 1:] < CLUSTERS).all()


def test_image_completion_keeps_the_prefix(imagegpt_pair):
    _, ours = imagegpt_pair("sdpa")
    prefix = with_start(pixels(batch=2))[:, : POSITIONS // 2]
    completed = ours.generate(prefix, max_new_tokens=POSITIONS - prefix.shape[1] + 1, do_sample=True, top_p=0.9)
    assert completed.shape == (2, POSITIONS + 1)
    assert torch.equal(completed[:, : prefix.shape[1]], prefix)


def test_cached_and_uncached_logits_agree(imagegpt_pair):
    _, ours = imagegpt_pair("sdpa")
    tokens = with_start(pixels())
    with torch.no_grad():
        full = ours(tokens, use_cache=False).logits
        first = ours(tokens[:, :20], use_cache=True)
        rest = ours(tokens[:, 20:], cache=first.cache, use_cache=True).logits
    assert_close_relative(torch.cat([first.logits, rest], dim=1), full)


def test_static_cache_generate_matches_dynamic(imagegpt_pair):
    _, ours = imagegpt_pair("sdpa")
    prompt = torch.full((2, 1), START)
    dynamic = ours.generate(prompt, max_new_tokens=12, do_sample=False)
    static = ours.generate(prompt, max_new_tokens=12, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic, static)
    cache = StaticCache(config=ours.config, max_cache_len=POSITIONS)
    with torch.no_grad():
        stepwise = ours(prompt, cache=cache, use_cache=True).logits
    assert_close_relative(stepwise, ours(prompt, use_cache=False).logits)


# --- Objectives --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_autoregressive_model_leaks_nothing_from_the_future(attn_implementation, tiny_config, random_model):
    model = random_model(IGPTModel._from_config(tiny_config(), attn_implementation=attn_implementation))
    tokens = pixels()
    changed = tokens.clone()
    changed[:, 20] = (changed[:, 20] + 1) % CLUSTERS
    with torch.no_grad():
        before, after = model(tokens).last_hidden_state, model(changed).last_hidden_state
    assert torch.allclose(before[:, :20], after[:, :20], atol=1e-6)
    assert not torch.allclose(before[:, 20:], after[:, 20:], atol=1e-3)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_bert_model_sees_both_sides(attn_implementation, tiny_config, random_model):
    model = random_model(IGPTModel._from_config(tiny_config(objective="bert"), attn_implementation=attn_implementation))
    tokens = pixels()
    changed = tokens.clone()
    changed[:, 20] = (changed[:, 20] + 1) % CLUSTERS
    with torch.no_grad():
        before, after = model(tokens).last_hidden_state, model(changed).last_hidden_state
    assert not torch.allclose(before[:, :20], after[:, :20], atol=1e-3)


def test_masked_token_embeddings_are_zero(tiny_config, random_model):
    model = random_model(IGPTModel(tiny_config(objective="bert")))
    tokens = pixels()
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, ::3] = True
    with torch.no_grad():
        embedded = model.embed(tokens, bool_masked_pos=mask)
        positions = model.wpe.weight[:POSITIONS].expand_as(embedded)
    assert torch.equal(embedded[mask], positions[mask])
    assert not torch.allclose(embedded[~mask], positions[~mask])
    # Masked content cannot reach the output: changing the pixels under the mask changes nothing.
    changed = torch.where(mask, (tokens + 1) % CLUSTERS, tokens)
    with torch.no_grad():
        assert torch.equal(model(tokens, bool_masked_pos=mask)[0], model(changed, bool_masked_pos=mask)[0])


def test_bert_loss_counts_masked_positions_only(tiny_config, random_model):
    model = random_model(IGPTForMaskedImageModeling(tiny_config(objective="bert")))
    tokens = pixels()
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 5] = True
    output = model(tokens, bool_masked_pos=mask, labels=tokens)
    expected = torch.nn.functional.cross_entropy(output.logits[:, 5], tokens[:, 5])
    assert torch.allclose(output.loss, expected, atol=1e-6)
    drawn = model(tokens, labels=tokens).bool_masked_pos  # drawn with p = 0.15 when not given
    assert 0 < drawn.float().mean() < 0.5


def test_autoregressive_loss_with_one_longer_labels_predicts_every_pixel(tiny_config, random_model):
    model = random_model(IGPTForCausalImageModeling(tiny_config()))
    image = pixels()
    inputs = with_start(image)
    labels = torch.cat([torch.full((2, 1), -100), image], dim=1)  # [-100, x_1 .. x_N]
    output = model(inputs, labels=labels)
    expected = torch.nn.functional.cross_entropy(output.logits.reshape(-1, CLUSTERS), image.reshape(-1))
    assert torch.allclose(output.loss, expected, atol=1e-6)


# --- Features and classification ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["autoregressive", "bert"])
def test_probe_features_are_mean_of_normed_hidden_states(objective, tiny_config, random_model):
    model = random_model(IGPTModel(tiny_config(objective=objective)))
    tokens = pixels()
    mask = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) < 0.3 if objective == "bert" else None
    with torch.no_grad():
        states = model(tokens, bool_masked_pos=mask, output_hidden_states=True).hidden_states
        features = model.get_probe_features(tokens, layers=[1, 3], concat=False, bool_masked_pos=mask)
        middle = model.get_probe_features(tokens, layers=1, bool_masked_pos=mask)
        first_two = model.get_probe_features(tokens, layers=[0, -3], bool_masked_pos=mask)
    expected_1 = model.h[1].ln_1(states[1]).mean(1)
    assert torch.allclose(features[:, 0], expected_1, atol=1e-6)
    assert torch.allclose(features[:, 1], states[3].mean(1), atol=1e-6)  # n^L = ln_f(h^L)
    assert torch.allclose(middle, expected_1, atol=1e-6)
    assert torch.allclose(first_two, torch.cat([model.h[0].ln_1(states[0]).mean(1), expected_1], dim=1), atol=1e-6)


def test_probe_features_run_only_the_blocks_below_the_deepest_layer(tiny_config):
    model = IGPTModel(tiny_config()).eval()
    ran = []
    for layer, block in enumerate(model.h):
        block.register_forward_hook(lambda module, args, output, layer=layer: ran.append(layer))
    with torch.no_grad():
        model.get_probe_features(pixels(), layers=[0, 1])
        assert ran == [0]  # f^1 reads block 1's input: blocks 1 and 2 never run
        ran.clear()
        model.get_probe_features(pixels(), layers=0)
        assert ran == []
        model.get_probe_features(pixels(), layers=-1)
        assert ran == [0, 1, 2]


def test_classifier_pools_the_configured_layer_and_joint_loss_adds_generation(tiny_config, random_model):
    config = tiny_config(num_labels=3, classifier_pooled_layer=2, generative_loss_weight=0.0)
    model = random_model(IGPTForImageClassification(config))
    images, labels = pixels(), torch.tensor([0, 2])  # the classifier reads pixel ids and adds the start token
    features = model.transformer.get_probe_features(with_start(images), layers=2)
    output = model(images, labels=labels)
    assert torch.allclose(output.logits, model.score(features), atol=1e-6)
    clf_only = output.loss
    model.config.generative_loss_weight = 1.0
    joint = model(images, labels=labels).loss
    # L_gen as in pretraining: every one of the N pixels predicted from [start, pixels before it]
    lm_logits = model.lm_head(model.transformer(with_start(images)).last_hidden_state)  # (B, N, K)
    gen = torch.nn.functional.cross_entropy(lm_logits.reshape(-1, CLUSTERS), images.reshape(-1))
    assert torch.allclose(joint, clf_only + gen, atol=1e-5)
    causal = IGPTForCausalImageModeling(model.config)
    causal.load_state_dict(model.state_dict(), strict=False)  # same trunk and lm_head
    pretraining_loss = causal(with_start(images), labels=torch.nn.functional.pad(images, (1, 0), value=-100)).loss
    assert torch.allclose(gen, pretraining_loss, atol=1e-5)


def test_bert_classifier_mask_ensemble_predicts_the_modal_class_of_its_masks(tiny_config, random_model):
    model = random_model(IGPTForImageClassification(tiny_config(objective="bert", num_labels=4)))
    tokens = pixels(batch=6)
    generator = torch.Generator().manual_seed(0)  # the 5 masks the ensemble draws, in the same order
    masks = [torch.rand(tokens.shape, generator=generator) < model.config.mask_probability for _ in range(5)]
    votes = torch.stack([mask.sum(-1) % 4 for mask in masks])  # (5, B)
    counts = torch.nn.functional.one_hot(votes, 4).sum(0)  # (B, 4): votes per class
    assert (votes != votes[0]).any()  # the masks disagree: one mask's vote alone would not pass

    def vote_by_masked_count(input_ids, bool_masked_pos, **kwargs):  # a classifier whose vote is known per mask
        return ImageClassifierOutput(logits=torch.nn.functional.one_hot(bool_masked_pos.sum(-1) % 4, 4).float())

    with mock.patch.object(model, "forward", vote_by_masked_count):
        predictions = model.predict_with_mask_ensemble(tokens, num_masks=5, generator=torch.Generator().manual_seed(0))
    assert predictions.shape == (6,) and predictions.dtype == torch.long
    assert (counts.gather(1, predictions[:, None])[:, 0] == counts.max(1).values).all()
    ar_model = random_model(IGPTForImageClassification(tiny_config(num_labels=4)))
    with torch.no_grad():  # autoregressive models have no mask to vary: their plain prediction
        assert torch.equal(ar_model.predict_with_mask_ensemble(tokens), ar_model(tokens).logits.argmax(-1))


def test_paper_initialisation(tiny_config):
    model = IGPTForImageClassification(tiny_config(num_labels=3, num_hidden_layers=8))
    assert model.lm_head.weight.abs().sum() == 0 and model.score.weight.abs().sum() == 0
    residual_std = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h]).std()
    other_std = torch.cat([b.attn.c_attn.weight.flatten() for b in model.transformer.h]).std()
    assert abs(residual_std - 0.02 / math.sqrt(16)) < 1e-3 and abs(other_std - 0.02) < 1e-3
    assert all((b.ln_1.weight == 1).all() for b in model.transformer.h)


@pytest.mark.parametrize("size, expected", [("s", 76e6), ("m", 455e6), ("l", 1.4e9)])
def test_paper_presets(size, expected):
    config = IGPTConfig.from_paper(size)
    with torch.device("meta"):
        count = IGPTForCausalImageModeling(config).num_parameters()
    assert abs(count - expected) / expected < 0.03
    assert IGPTConfig.from_paper(size, image_size=48).max_position_embeddings == 2304


# --- Training --------------------------------------------------------------------------------------------------------


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, count: int, classes: bool = False):
        # Learnable structure: each image is one colour with a few noisy pixels; its class is the colour mod 3.
        generator = torch.Generator().manual_seed(1)
        colours = torch.randint(0, CLUSTERS, (count, 1), generator=generator)
        self.images = colours.expand(count, POSITIONS).clone()
        noise = torch.rand(count, POSITIONS, generator=generator) < 0.1
        self.images[noise] = torch.randint(0, CLUSTERS, (int(noise.sum()),), generator=generator)
        self.classes = colours[:, 0] % 3 if classes else None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        if self.classes is not None:  # the classifier reads whole images; L_gen predicts their pixels
            return {"input_ids": image, "labels": self.classes[index]}
        return {
            "input_ids": torch.cat([torch.tensor([START]), image[:-1]]),
            "labels": torch.cat([torch.tensor([-100]), image]),
        }


def train(tmp_path, model, batch: int, accumulation: int, steps: int, lr: float = 0.0, dataset=None, **args):
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
        max_steps=steps, learning_rate=lr, adam_beta2=0.95, weight_decay=0.0, lr_scheduler_type="constant",
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, dataloader_drop_last=True, seed=0,
        **args,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(64) if dataset is None else dataset)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], model


@pytest.fixture
def causal_model(tiny_config):
    """`causal_model()`: the same freshly initialised next-pixel model at every call."""

    def build():
        torch.manual_seed(0)
        return IGPTForCausalImageModeling(tiny_config())

    return build


def test_trainer_lowers_the_loss(tmp_path, causal_model):
    losses, _ = train(tmp_path, causal_model(), batch=8, accumulation=1, steps=30, lr=3e-3)
    assert losses[-1] < 0.7 * losses[0]


def test_gradient_accumulation_matches_a_full_batch(tmp_path, causal_model):
    # lr=0: the model stays put, so both runs score the same first 8 examples.
    (full,), _ = train(tmp_path / "full", causal_model(), batch=8, accumulation=1, steps=1)
    (accumulated,), _ = train(tmp_path / "accumulated", causal_model(), batch=4, accumulation=2, steps=1)
    assert math.isclose(full, accumulated, rel_tol=1e-4)


def test_classifier_joint_loss_and_gradients_under_accumulation_match_a_full_batch(tmp_path, tiny_config, random_model):
    """L_clf + L_gen: Trainer passes `num_items_in_batch` (examples across the accumulation steps) and does not average
    the steps itself, so L_gen, a mean per token of one step, must be rescaled too; left alone it counts twice at 2."""
    config = tiny_config(num_labels=3, generative_loss_weight=1.0)
    dataset = TokenDataset(64, classes=True)
    runs = {}
    for name, batch, accumulation in (("full", 8, 1), ("accumulated", 4, 2)):
        model = random_model(IGPTForImageClassification(config))  # random heads: zero-initialised ones pass no gradient
        before = [parameter.detach().clone() for parameter in model.parameters()]
        # plain SGD, no clipping: the step is -lr x the gradient, so equal steps mean equal gradients
        (loss,), model = train(
            tmp_path / name, model, batch, accumulation, steps=1, lr=0.1, dataset=dataset, optim="sgd",
            max_grad_norm=0.0,
        )  # fmt: skip
        runs[name] = loss, [(after.detach() - start) for after, start in zip(model.parameters(), before)]
    (full_loss, full_steps), (accumulated_loss, accumulated_steps) = runs["full"], runs["accumulated"]
    assert math.isclose(full_loss, accumulated_loss, rel_tol=1e-4)
    assert any(step.abs().max() > 1e-3 for step in full_steps)
    for full_step, accumulated_step in zip(full_steps, accumulated_steps):
        torch.testing.assert_close(accumulated_step, full_step, rtol=1e-3, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, random_model):
    model = random_model(IGPTForCausalImageModeling(tiny_config())).train()
    tokens = with_start(pixels())
    model(tokens, labels=tokens).loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(tokens, labels=tokens).loss.backward()
    for grad, reference in zip((p.grad for p in model.parameters()), expected):
        assert torch.allclose(grad, reference, atol=1e-5)


# --- Bad input -------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tiny_config):
    model = IGPTForCausalImageModeling(tiny_config())
    with pytest.raises(ValueError, match="out of range"):
        model(torch.tensor([[START, VOCAB]]))
    with pytest.raises(ValueError, match="out of range"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="Sequence too long"):
        model(torch.zeros(1, POSITIONS + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):  # the start token is never a target
        model(torch.tensor([[START, 1]]), labels=torch.tensor([[START, START]]))
    with pytest.raises(ValueError, match="does not exist"):
        model.transformer.get_probe_features(torch.zeros(1, 4, dtype=torch.long), layers=7)
    with pytest.raises(ValueError, match="classifier_pooled_layer"):
        tiny_config(classifier_pooled_layer=4)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(hidden_size=30)
    with pytest.raises(ValueError, match="objective"):
        tiny_config(objective="diffusion")
    with pytest.raises(ValueError, match="Unknown paper size"):
        IGPTConfig.from_paper("xxl")
    with pytest.raises(ValueError, match="objective='bert'"):
        IGPTForMaskedImageModeling(tiny_config())
    with pytest.raises(ValueError, match="objective='autoregressive'"):
        IGPTForCausalImageModeling(tiny_config(objective="bert"))
