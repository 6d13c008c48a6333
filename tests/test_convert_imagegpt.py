"""`python -m modeling_igpt.convert_imagegpt`: ImageGPT -> IGPT -> ImageGPT keeps logits, palette and tokens."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images
from transformers import (
    AutoImageProcessor,
    ImageGPTConfig,
    ImageGPTForCausalImageModeling,
    ImageGPTForImageClassification,
    ImageGPTImageProcessorPil,
)

from image_processing import IGPTImageProcessor
from modeling_igpt import IGPTForCausalImageModeling, IGPTForImageClassification
from modeling_igpt.convert_imagegpt import check_same_outputs, copy_weights, imagegpt_to_igpt_config, reads
from modeling_igpt.convert_imagegpt import main as convert_main


CLUSTERS, SIDE = 8, 6


def imagegpt_folder(folder, model_class):
    config = ImageGPTConfig(vocab_size=CLUSTERS + 1, n_positions=SIDE * SIDE, n_embd=16, n_layer=2, n_head=2, num_labels=3)
    model = model_class(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.save_pretrained(folder)
    palette = np.random.default_rng(0).uniform(-1, 1, (CLUSTERS, 3))
    ImageGPTImageProcessorPil(clusters=palette, size={"height": SIDE, "width": SIDE}).save_pretrained(folder)
    return model


def convert(*args):
    result = subprocess.run([sys.executable, "-m", "modeling_igpt.convert_imagegpt", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize(
    "source_class, target_class",
    [(ImageGPTForCausalImageModeling, IGPTForCausalImageModeling), (ImageGPTForImageClassification, IGPTForImageClassification)],
)
def test_round_trip_through_the_command_line(tmp_path, source_class, target_class):
    source = imagegpt_folder(tmp_path / "imagegpt", source_class)
    assert "Wrote" in convert(tmp_path / "imagegpt", tmp_path / "igpt")
    converted = target_class.from_pretrained(tmp_path / "igpt").eval()
    pixels = torch.randint(0, CLUSTERS, (2, SIDE * SIDE))
    with torch.no_grad():  # an image's pixel ids; IGPT's classifier adds the start token, the others are given it
        assert torch.allclose(converted(reads(converted, pixels)).logits, source(reads(source, pixels)).logits, rtol=1e-5, atol=1e-6)

    photo = load_sample_images().images[1][::8, ::8]
    theirs = AutoImageProcessor.from_pretrained(tmp_path / "imagegpt")
    ours = IGPTImageProcessor.from_pretrained(tmp_path / "igpt")
    assert np.array_equal(ours(photo, return_tensors="np")["input_ids"], theirs(photo, return_tensors="np")["input_ids"])

    convert(tmp_path / "igpt", tmp_path / "back", "--reverse")
    back = source_class.from_pretrained(tmp_path / "back").eval()
    for name, tensor in source.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert np.allclose(AutoImageProcessor.from_pretrained(tmp_path / "back").clusters, theirs.clusters)


def test_palette_and_vocabulary_must_agree(tmp_path):
    imagegpt_folder(tmp_path / "imagegpt", ImageGPTForCausalImageModeling)
    ImageGPTImageProcessorPil(clusters=np.zeros((CLUSTERS + 2, 3)), size={"height": SIDE, "width": SIDE}).save_pretrained(
        tmp_path / "imagegpt"
    )
    result = subprocess.run(
        [sys.executable, "-m", "modeling_igpt.convert_imagegpt", str(tmp_path / "imagegpt"), str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode != 0 and "vocab_size=9 (8 colours + 1 start token) but the tokenizer has 10 colours" in result.stderr
    assert str(tmp_path / "imagegpt" / "preprocessor_config.json") in result.stderr
    assert not (tmp_path / "out").exists()


def test_processor_size_and_positions_must_agree(tmp_path):
    imagegpt_folder(tmp_path / "imagegpt", ImageGPTForCausalImageModeling)  # 6 x 6 = 36 positions
    palette = np.random.default_rng(0).uniform(-1, 1, (CLUSTERS, 3))
    ImageGPTImageProcessorPil(clusters=palette, size={"height": 4, "width": 4}).save_pretrained(tmp_path / "imagegpt")
    with pytest.raises(ValueError, match="max_position_embeddings=36 but the tokenizer makes 4x4 images = 16 tokens"):
        convert_main([str(tmp_path / "imagegpt"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_non_empty_target_or_the_source_itself_is_refused_unless_overwrite(tmp_path):
    imagegpt_folder(tmp_path / "imagegpt", ImageGPTForCausalImageModeling)
    source_config = (tmp_path / "imagegpt" / "config.json").read_bytes()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"busy is not empty \(notes.txt"):
        convert_main([str(tmp_path / "imagegpt"), str(busy)])
    assert sorted(path.name for path in busy.iterdir()) == ["notes.txt"]
    with pytest.raises(FileExistsError, match="is the source folder"):
        convert_main([str(tmp_path / "imagegpt"), str(tmp_path / "imagegpt" / ".." / "imagegpt")])
    assert (tmp_path / "imagegpt" / "config.json").read_bytes() == source_config
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        convert_main([str(tmp_path / "imagegpt"), str(tmp_path / "file"), "--overwrite"])

    convert_main([str(tmp_path / "imagegpt"), str(busy), "--overwrite"])  # asked for: written next to notes.txt
    assert (busy / "notes.txt").read_text() == "keep me"
    assert IGPTForCausalImageModeling.from_pretrained(busy).config.vocab_size == CLUSTERS + 1
    convert_main([str(busy), str(tmp_path / "empty"), "--reverse"])  # a new folder needs no flag
    (tmp_path / "empty2").mkdir()
    convert_main([str(busy), str(tmp_path / "empty2"), "--reverse"])  # nor does an empty one
    with pytest.raises(FileExistsError, match="is the source folder"):
        convert_main([str(busy), str(busy), "--reverse"])


def test_conversion_check_catches_different_outputs():
    config = ImageGPTConfig(vocab_size=CLUSTERS + 1, n_positions=SIDE * SIDE, n_embd=16, n_layer=2, n_head=2)
    source = ImageGPTForCausalImageModeling(config).eval()
    target = IGPTForCausalImageModeling(imagegpt_to_igpt_config(config)).eval()
    torch.nn.init.normal_(source.lm_head.weight)  # ImageGPT's own init would leave nothing to compare
    copy_weights(source, target)
    check_same_outputs(source, target)  # same weights: passes
    with torch.no_grad():
        target.transformer.ln_f.weight.mul_(1.01)
    with pytest.raises(ValueError, match="differ from the source"):
        check_same_outputs(source, target)


def test_a_missing_folder_or_the_wrong_direction_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere has no config.json"):
        convert_main([str(tmp_path / "nowhere"), str(tmp_path / "out")])
    imagegpt_folder(tmp_path / "imagegpt", ImageGPTForCausalImageModeling)
    with pytest.raises(ValueError, match=r"holds a 'imagegpt' checkpoint, but this conversion reads 'igpt' ones \(ImageGPT -> IGPT: drop --reverse\)"):
        convert_main([str(tmp_path / "imagegpt"), str(tmp_path / "out"), "--reverse"])
    convert_main([str(tmp_path / "imagegpt"), str(tmp_path / "igpt")])
    with pytest.raises(ValueError, match=r"holds a 'igpt' checkpoint, but this conversion reads 'imagegpt' ones \(IGPT -> ImageGPT takes --reverse\)"):
        convert_main([str(tmp_path / "igpt"), str(tmp_path / "again")])  # silently re-converted an IGPT folder before
    assert not (tmp_path / "out").exists() and not (tmp_path / "again").exists()
