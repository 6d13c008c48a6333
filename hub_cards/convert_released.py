"""Turn OpenAI's released ImageGPT checkpoints into published IGPT repositories (igpt-s/m/l) with cards.

    python -m hub_cards.convert_released SOURCE --repo_id ORG/igpt-s --output_dir DIR [--require_safetensors]
        [any hub_cards/publish.py option: --dataset_name, --num_samples, --push, --revision, ...]

SOURCE is a folder in transformers' ImageGPT layout (config.json, model.safetensors or pytorch_model.bin,
preprocessor_config.json with the palette), e.g. a download of openai/imagegpt-small, -medium or -large, or that
repository id itself (downloaded with huggingface_hub). The weights go through modeling_igpt.convert_imagegpt, are
checked to give the source model's logits, and are published as model.safetensors with hub_cards/publish.py.
"""

import tempfile
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import ImageGPTForCausalImageModeling, ImageGPTForImageClassification, ImageGPTModel

from image_processing import IGPTImageProcessor
from modeling_igpt.convert_imagegpt import convert_imagegpt_to_igpt

from .publish import build_parser, publish


SOURCE_CLASSES = {cls.__name__: cls for cls in (ImageGPTForCausalImageModeling, ImageGPTForImageClassification, ImageGPTModel)}


def fetch_source(source: str) -> Path:
    """A local folder as is; a Hub id downloaded (config, processor and weights only)."""
    if Path(source).is_dir():
        return Path(source)
    patterns = ["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin"]
    return Path(snapshot_download(source, allow_patterns=patterns))


def check_source(folder: Path, require_safetensors: bool):
    for name, what in (("config.json", "the model config"), ("preprocessor_config.json", "the palette (clusters)")):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}: {what} is needed to convert an ImageGPT checkpoint")
    safetensors = list(folder.glob("*.safetensors"))
    pickles = list(folder.glob("pytorch_model*.bin"))
    if not safetensors and not pickles:
        raise FileNotFoundError(f"{folder} has no weights (model.safetensors or pytorch_model.bin)")
    if require_safetensors and not safetensors:
        raise ValueError(
            f"{folder} has only pickle weights ({', '.join(path.name for path in pickles)}) and --require_safetensors "
            "was given; drop the flag to read them with torch.load(weights_only=True)"
        )


@torch.no_grad()
def check_same_logits(source_dir: Path, converted, tolerance: float = 1e-5) -> float:
    """Largest relative difference between the source ImageGPT's outputs and the converted model's on random pixels."""
    source = SOURCE_CLASSES[type(converted).__name__.replace("IGPT", "ImageGPT")].from_pretrained(source_dir, attn_implementation="eager").eval()
    tokens = torch.randint(0, converted.config.vocab_size - 1, (2, converted.config.max_position_embeddings))
    expected, actual = source(tokens)[0], converted.eval()(tokens)[0]
    difference = ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
    if difference > tolerance:
        raise ValueError(f"The converted model's outputs differ from the source's by {difference:.2e} (relative)")
    return difference


def convert_released(options) -> Path:
    source_dir = fetch_source(options.source)
    check_source(source_dir, options.require_safetensors)
    with tempfile.TemporaryDirectory() as scratch:
        converted = convert_imagegpt_to_igpt(source_dir, scratch)
        # The processor read from the source's own config keeps ImageGPT's preprocessing (a stretch, no centre crop).
        IGPTImageProcessor.from_pretrained(source_dir).save_pretrained(scratch)
        difference = check_same_logits(source_dir, converted)
        print(f"Converted {options.source}: outputs match the source within {difference:.1e} (relative)")
        options.checkpoint = Path(scratch)
        options.source_repo = options.source_repo or (None if Path(options.source).is_dir() else options.source)
        return publish(options)


def main(argv: list[str] | None = None):
    parser = build_parser(__doc__)
    parser.add_argument("source", help="ImageGPT folder or Hub id (openai/imagegpt-small, -medium, -large)")
    parser.add_argument("--require_safetensors", action="store_true", help="refuse pytorch_model.bin sources")
    parser.add_argument("--source_repo", help="Hub id the folder was downloaded from, named in the card")
    convert_released(parser.parse_args(argv))


if __name__ == "__main__":
    main()
