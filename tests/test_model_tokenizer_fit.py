"""One rule decides whether a model and its image tokenizer belong together (modeling_igpt.compatibility):
height x width == max_position_embeddings and clusters (or VQ-VAE codes) + 1 == vocab_size. Every entry point calls
it: the example scripts, the generation pipeline, the converter and publishing (tests/test_hub.py,
tests/test_pipeline_igpt.py and tests/test_convert_imagegpt.py hold the last three)."""

import numpy as np
import pytest

from example_scripts import load_example
from image_processing import IGPTImageProcessor
from modeling_igpt import (
    IGPTConfig,
    IGPTForCausalImageModeling,
    IGPTVQVAEConfig,
    IGPTVQVAEModel,
    check_model_fits_tokenizer,
)


# (model height, width, colours), (processor height, width, colours), what the error must say
MISFITS = {
    "8x8 model, 4x4 processor": (
        (8, 8, 16), (4, 4, 16), r"max_position_embeddings=64 but the tokenizer makes 4x4 images = 16 tokens",
    ),
    "8x8 model, 16x16 processor": (
        (8, 8, 16), (16, 16, 16), r"max_position_embeddings=64 but the tokenizer makes 16x16 images = 256 tokens",
    ),
    "16-colour model, 8-colour palette": (
        (8, 8, 16), (8, 8, 8), r"vocab_size=17 \(16 colours \+ 1 start token\) but the tokenizer has 8 colours",
    ),
}


def processor(height, width, clusters) -> IGPTImageProcessor:
    palette = np.random.default_rng(0).uniform(-1, 1, (clusters, 3))
    return IGPTImageProcessor(clusters=palette, size={"height": height, "width": width})


def config(height, width, clusters, **overrides) -> IGPTConfig:
    return IGPTConfig(
        vocab_size=clusters + 1, max_position_embeddings=height * width, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, **overrides,
    )


@pytest.fixture(params=list(MISFITS), ids=list(MISFITS))
def misfit(request, tmp_path):
    """A checkpoint folder whose model and processor do not fit, and the error they must give."""
    model_shape, processor_shape, match = MISFITS[request.param]
    folder = tmp_path / "checkpoint"
    IGPTForCausalImageModeling(config(*model_shape)).save_pretrained(folder)
    processor(*processor_shape).save_pretrained(folder)
    return folder, match


# --- The rule ---------------------------------------------------------------------------------------------------------


def test_a_palette_processor_fits_iff_pixels_are_positions_and_colours_plus_one_are_the_vocabulary():
    check_model_fits_tokenizer(config(8, 8, 16), processor(8, 8, 16))
    check_model_fits_tokenizer(config(4, 8, 16), processor(4, 8, 16))  # not square (the model knows only 32 positions)
    for model_shape, processor_shape, match in MISFITS.values():
        with pytest.raises(ValueError, match=match):
            check_model_fits_tokenizer(config(*model_shape), processor(*processor_shape))


def test_the_error_names_both_sources_and_both_numbers():
    with pytest.raises(ValueError) as error:
        check_model_fits_tokenizer(
            config(8, 8, 16), processor(4, 4, 8), model_source="runs/a/config.json", processor_source="palettes/b"
        )
    message = str(error.value)
    for expected in ("runs/a/config.json", "palettes/b", "max_position_embeddings=64", "4x4 images = 16 tokens",
                     "vocab_size=17", "has 8 colours"):  # fmt: skip
        assert expected in message, (expected, message)


def test_unnamed_sources_are_left_out_of_the_message():
    with pytest.raises(ValueError, match=r"^The model and the image tokenizer do not belong together: vocabulary"):
        check_model_fits_tokenizer(config(8, 8, 16), processor(8, 8, 8))


def test_without_palette_or_vqvae_there_are_no_token_ids():
    with pytest.raises(ValueError, match="no palette"):
        check_model_fits_tokenizer(config(8, 8, 16), IGPTImageProcessor(size={"height": 8, "width": 8}))


def test_vqvae_codes_fit_iff_the_code_grid_is_the_positions_and_codes_plus_one_the_vocabulary():
    vqvae = IGPTVQVAEModel(IGPTVQVAEConfig(image_size=8, latent_size=4, codebook_size=32, hidden_size=8,
                                           residual_hidden_size=4, num_residual_layers=1))  # fmt: skip
    pixels = IGPTImageProcessor(size={"height": 8, "width": 8}, do_color_quantize=False)  # no palette needed
    check_model_fits_tokenizer(config(4, 4, 32), pixels, vqvae)  # 8x8 pixels -> 4x4 codes
    with pytest.raises(ValueError, match=r"max_position_embeddings=64 but the tokenizer makes 4x4 code grid = 16"):
        check_model_fits_tokenizer(config(8, 8, 32), pixels, vqvae)  # a model for the pixels, not the codes
    with pytest.raises(ValueError, match=r"vocab_size=17 \(16 codes \+ 1 start token\) but the tokenizer has 32 codes"):
        check_model_fits_tokenizer(config(4, 4, 16), pixels, vqvae)
    odd = IGPTImageProcessor(size={"height": 9, "width": 8}, do_color_quantize=False)
    with pytest.raises(ValueError, match="not divisible by the VQ-VAE's downsampling factor 2"):
        check_model_fits_tokenizer(config(4, 4, 32), odd, vqvae)


# --- Every script checks it before it works ---------------------------------------------------------------------------


def test_run_sampling_refuses_a_misfit(misfit, tmp_path):
    run_sampling = load_example("run_sampling")

    folder, match = misfit
    with pytest.raises(ValueError, match=match) as error:
        run_sampling.main(
            ["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "out"), "--num_samples", "2"]
        )
    assert str(folder) in str(error.value)
    assert not (tmp_path / "out" / "samples.png").exists()


def test_run_linear_probe_refuses_a_misfit(misfit, tmp_path):
    run_linear_probe = load_example("run_linear_probe")

    folder, match = misfit
    with pytest.raises(ValueError, match=match):
        run_linear_probe.main(
            ["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "out"), "--dataset_name", "digits"]
        )
    assert not (tmp_path / "out" / "probe_results.json").exists()


def test_run_pretraining_refuses_a_processor_from_elsewhere_that_does_not_fit(tmp_path, monkeypatch):
    run_pretraining = load_example("run_pretraining")

    def tripwire(*args, **kwargs):
        raise AssertionError("reached training with a misfit")

    monkeypatch.setattr(run_pretraining, "BitsPerDimTrainer", tripwire)
    model_folder, processor_folder = tmp_path / "model", tmp_path / "palette"
    IGPTForCausalImageModeling(config(8, 8, 16)).save_pretrained(model_folder)
    processor(4, 4, 16).save_pretrained(processor_folder)
    with pytest.raises(ValueError, match=MISFITS["8x8 model, 4x4 processor"][2]) as error:
        run_pretraining.main([
            "--dataset_name", "digits", "--model_name_or_path", str(model_folder),
            "--image_processor_name", str(processor_folder), "--output_dir", str(tmp_path / "out"),
        ])  # fmt: skip
    assert str(model_folder) in str(error.value) and str(processor_folder) in str(error.value)


def test_run_image_classification_refuses_a_misfit(misfit, tmp_path):
    run_image_classification = load_example("run_image_classification")

    folder, match = misfit
    with pytest.raises(ValueError, match=match):
        run_image_classification.main(
            ["--dataset_name", "digits", "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "out")]
        )
