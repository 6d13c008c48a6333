"""The custom unconditional-image-generation pipeline: samples, completions, saved registration, clear errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from modeling_igpt import IGPTForCausalImageModeling, IGPTForMaskedImageModeling
from modeling_igpt.pipeline_igpt import TASK, IGPTImageGenerationPipeline
from test_model_tokenizer_fit import MISFITS  # the mismatched model/processor pairs, one table


CLUSTERS, HEIGHT, WIDTH = 8, 6, 6  # tests/conftest.py's tiny_processor()


@pytest.fixture(scope="session")
def tiny_model(tiny_model):
    """Models of 6 x 6 images in 8 colours: `tiny_model(model_class=IGPTForCausalImageModeling, **config)`."""

    def build(model_class=IGPTForCausalImageModeling, **overrides):
        sizes = dict(vocab_size=CLUSTERS + 1, max_position_embeddings=HEIGHT * WIDTH, hidden_size=16)
        return tiny_model(model_class, **sizes, num_attention_heads=2, **overrides)

    return build


@pytest.fixture(scope="module")
def pipe(tiny_model, tiny_processor):
    return IGPTImageGenerationPipeline(model=tiny_model(), image_processor=tiny_processor(), device=-1)


@pytest.fixture(scope="module")
def photo():
    return load_sample_images().images[0][::8, ::8]  # (54, 80, 3) uint8, not square


def test_unconditional_samples_are_images_and_seeded(pipe):
    first = pipe(num_images=3, top_k=4, seed=0)
    again = pipe(num_images=3, top_k=4, seed=0)
    assert len(first) == 3 and all(image.size == (WIDTH, HEIGHT) and image.mode == "RGB" for image in first)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    palette = {tuple(colour) for colour in pipe.image_processor.palette_rgb()}
    assert {tuple(pixel) for image in first for pixel in np.asarray(image).reshape(-1, 3)} <= palette


def test_completion_keeps_the_top_half_and_continues_like_generate(pipe, photo):
    processor, model = pipe.image_processor, pipe.model
    completions = pipe(photo, num_images=2, do_sample=False)
    pixels = processor(photo, return_tensors="pt")["input_ids"]  # (1, H*W)
    kept = HEIGHT // 2 * WIDTH
    prompt = torch.cat([torch.tensor([[processor.start_token_id]]), pixels[:, :kept]], dim=1)
    expected = model.generate(prompt, max_new_tokens=HEIGHT * WIDTH - kept, do_sample=False)[:, 1:]  # (1, H*W)
    expected_image = processor.decode(expected, output_type="np")[0]
    quantized = processor.decode(pixels, output_type="np")[0]
    for completion in completions:
        completion = np.asarray(completion)
        assert np.array_equal(completion[: HEIGHT // 2], quantized[: HEIGHT // 2])
        assert np.array_equal(completion, expected_image)


def test_a_list_of_images_gives_a_list_of_completions(pipe, photo):
    outputs = pipe([photo, photo[:, ::-1]], num_images=2, prompt_fraction=0.25)
    assert [len(images) for images in outputs] == [2, 2]


def test_save_pretrained_records_the_custom_pipeline(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"][TASK] == {
        "impl": "pipeline_igpt.IGPTImageGenerationPipeline", "pt": ["AutoModelForCausalLM"],
    }
    assert (tmp_path / "pipeline_igpt.py").is_file() and (tmp_path / "preprocessor_config.json").is_file()


def test_bad_setups_raise_clear_errors(pipe, tiny_model, tiny_processor):
    with pytest.raises(ValueError, match="autoregressive"):
        IGPTImageGenerationPipeline(
            model=tiny_model(IGPTForMaskedImageModeling, objective="bert"), image_processor=tiny_processor(), device=-1
        )
    with pytest.raises(ValueError, match=r"vocab_size=9 \(8 colours \+ 1 start token\) but the tokenizer has 5 colours"):
        IGPTImageGenerationPipeline(model=tiny_model(), image_processor=tiny_processor(clusters=5), device=-1)
    with pytest.raises(ValueError, match="needs the checkpoint's IGPT image processor"):
        IGPTImageGenerationPipeline(model=tiny_model(), device=-1)
    with pytest.raises(ValueError, match="prompt_fraction"):
        pipe(num_images=1, prompt_fraction=1.5)


@pytest.mark.parametrize("misfit", list(MISFITS))
def test_a_processor_that_does_not_fit_the_model_is_refused(misfit, tiny_config, tiny_processor):
    (height, width, colours), processor_shape, match = MISFITS[misfit]
    model = IGPTForCausalImageModeling(tiny_config(vocab_size=colours + 1, max_position_embeddings=height * width))
    with pytest.raises(ValueError, match=match):
        IGPTImageGenerationPipeline(model=model, image_processor=tiny_processor(*processor_shape), device=-1)


@pytest.mark.parametrize("keyword", ["max_length", "max_new_tokens", "min_length", "input_ids", "attention_mask"])
def test_length_and_prompt_keywords_are_refused_naming_them(pipe, keyword):
    # generate() would otherwise get max_length twice (TypeError "multiple values") or a different image length
    with pytest.raises(ValueError, match=rf"always generates whole images .* does not take \['{keyword}'\]"):
        pipe(num_images=1, **{keyword: 200})
    with pytest.raises(ValueError, match="takes num_images="):
        pipe(num_return_sequences=2)


def test_a_seed_that_is_not_an_integer_is_refused(pipe):
    with pytest.raises(ValueError, match="seed must be an integer, got 'a'"):
        pipe(num_images=1, seed="a")


def test_completion_prompts_keep_whole_top_rows_after_the_start_token():
    from modeling_igpt.pipeline_igpt import completion_prompts

    pixels = torch.arange(2 * 7 * 3).view(2, 21)  # two 7-row, 3-column images
    prompts = completion_prompts(pixels, width=3, height=7, start_token_id=99)
    kept = round(7 * 0.5) * 3  # 4 whole rows: what the pipeline and run_sampling both keep
    assert torch.equal(prompts[:, 0], torch.tensor([99, 99]))
    assert torch.equal(prompts[:, 1:], pixels[:, :kept])
    assert completion_prompts(pixels, 3, 7, 99, prompt_fraction=0.25).shape == (2, 1 + 2 * 3)


# --- A prior on VQ-VAE codes ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vqvae_pipe(tiny_model, random_model, tiny_vqvae_tokenizer):
    """A prior on the 6 x 6 codes (8 in the codebook) of a VQ-VAE of 12 x 12 images, with random weights."""
    tokenizer = tiny_vqvae_tokenizer(codebook_size=CLUSTERS)
    prior = random_model(tiny_model())
    return IGPTImageGenerationPipeline(model=prior, image_processor=tokenizer.processor, vqvae=tokenizer.vqvae, device=-1)


def decoded(vqvae, codes: torch.LongTensor) -> np.ndarray:
    """VQ-VAE codes (B, 36) -> (B, 12, 12, 3) uint8 pictures, written out here from the decoder's [-1, 1] output."""
    with torch.no_grad():
        pixels = vqvae.decode(codes).permute(0, 2, 3, 1)  # (B, 12, 12, 3)
    return ((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def test_a_vqvae_prior_samples_codes_and_decodes_them_with_its_vqvae(vqvae_pipe):
    model, vqvae = vqvae_pipe.model, vqvae_pipe.image_tokenizer.vqvae
    samples = vqvae_pipe(num_images=2, top_k=4, seed=0)
    assert all(image.size == (12, 12) and image.mode == "RGB" for image in samples)  # the VQ-VAE's input size
    torch.manual_seed(0)
    start = torch.full((2, 1), CLUSTERS)
    codes = model.generate(start, attention_mask=torch.ones_like(start), max_length=37, do_sample=True, top_k=4)
    assert np.array_equal(np.stack([np.asarray(image) for image in samples]), decoded(vqvae, codes[:, 1:]))


def test_a_vqvae_prior_completes_the_top_rows_of_codes(vqvae_pipe, photo):
    model, tokenizer = vqvae_pipe.model, vqvae_pipe.image_tokenizer
    completion = vqvae_pipe(photo, num_images=1, do_sample=False)[0]
    codes = tokenizer([photo])  # (1, 36): the photo at 12 x 12 through the encoder
    kept = HEIGHT // 2 * WIDTH
    prompt = torch.cat([torch.tensor([[CLUSTERS]]), codes[:, :kept]], dim=1)
    expected = model.generate(prompt, max_new_tokens=HEIGHT * WIDTH - kept, do_sample=False)[:, 1:]  # (1, 36)
    assert torch.equal(expected[:, :kept], codes[:, :kept])
    assert np.array_equal(np.asarray(completion), decoded(tokenizer.vqvae, expected)[0])


def test_a_saved_vqvae_prior_loads_its_vqvae_from_its_folder(vqvae_pipe, tmp_path):
    from transformers import pipeline

    vqvae_pipe.save_pretrained(tmp_path)
    assert (tmp_path / "vqvae" / "model.safetensors").is_file() and (tmp_path / "modeling_vqvae.py").is_file()
    reloaded = pipeline(TASK, model=str(tmp_path), device=-1)
    before, after = vqvae_pipe(num_images=2, seed=3), reloaded(num_images=2, seed=3)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(before, after))

    shutil.rmtree(tmp_path / "vqvae")
    with pytest.raises(ValueError, match=r"has neither a palette in its image processor nor a VQ-VAE in vqvae/"):
        pipeline(TASK, model=str(tmp_path), device=-1)


def test_a_vqvae_prior_without_its_vqvae_or_with_another_is_refused(vqvae_pipe, tiny_model, tiny_vqvae):
    prior = tiny_model()
    with pytest.raises(ValueError, match="has no palette, so the model reads VQ-VAE codes: pass vqvae="):
        IGPTImageGenerationPipeline(model=prior, image_processor=vqvae_pipe.image_processor, device=-1)
    prior.name_or_path = "org/igpt-vq"  # as from_pretrained("org/igpt-vq") sets it: loaded from the Hub: vqvae/ is not on this disk at the model's commit
    with pytest.raises(ValueError, match=r"'org/igpt-vq' reads VQ-VAE codes .*snapshot_download"):
        IGPTImageGenerationPipeline(model=prior, image_processor=vqvae_pipe.image_processor, device=-1)
    with pytest.raises(ValueError, match=r"vocab_size=9 \(8 codes \+ 1 start token\) but the tokenizer has 16 codes"):
        IGPTImageGenerationPipeline(
            model=prior, image_processor=vqvae_pipe.image_processor, vqvae=tiny_vqvae(codebook_size=16), device=-1
        )
