"""Turn OpenAI's released ImageGPT checkpoints into published IGPT repositories (igpt-s/m/l) with cards.

    python -m hub_cards.convert_released SOURCE --repo_id ORG/igpt-s --output_dir DIR [--require_safetensors]
        [any hub_cards.publish option: --dataset_name, --num_samples, --push, --revision, ...]

SOURCE is a folder in transformers' ImageGPT layout (config.json, model.safetensors or pytorch_model.bin,
preprocessor_config.json with the palette), e.g. a download of openai/imagegpt-small, -medium or -large, or that
repository id itself (downloaded with huggingface_hub). The weights go through modeling_igpt.convert_imagegpt, are
checked there to give the source model's outputs, and are published as model.safetensors with hub_cards.publish.
"""

import tempfile
from pathlib import Path

from huggingface_hub import snapshot_download

from modeling_igpt.convert_imagegpt import convert_imagegpt_to_igpt

from .publish import build_parser, publish


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


def convert_released(options) -> Path:
    source_dir = fetch_source(options.source)
    check_source(source_dir, options.require_safetensors)
    with tempfile.TemporaryDirectory() as scratch:
        convert_imagegpt_to_igpt(source_dir, scratch)  # raises unless the outputs match the source's within 1e-5
        print(f"Converted {options.source}: outputs match the source's")
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
