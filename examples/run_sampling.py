#!/usr/bin/env python
"""Draw images from an autoregressive Image GPT: unconditional samples and completions of half images (the paper's
Figure 1 and Appendix B), written as PNG grids.

    start token -> generate N tokens (temperature / top-k / top-p) -> palette colours or VQ-VAE decoder -> samples.png
    [start, top half of a test image] -> generate the bottom half, k times -> completions.png
        (each row: the given top half, k completions, the original)

    python examples/run_sampling.py --model_name_or_path igpt-s-cifar10 --output_dir samples --num_samples 64 \\
        --dataset_name uoft-cs/cifar10 --num_completions 8 --seed 0
"""

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import HfArgumentParser, set_seed

from image_processing import make_image_grid
from image_processing.data import DataArguments, load_image_splits
from modeling_igpt import IGPTConfig, IGPTForCausalImageModeling, ImageTokenizer
from modeling_igpt.pipeline_igpt import completion_prompts
from modeling_igpt.training import check_local_folder


logger = logging.getLogger(__name__)


@dataclass
class SamplingArguments:
    model_name_or_path: str = field(metadata={"help": "An autoregressive Image GPT checkpoint with its processor."})
    output_dir: str = field(metadata={"help": "Where samples.png, completions.png and sampling.json go."})
    num_samples: int = field(default=16, metadata={"help": "Unconditional samples to draw (0 for none)."})
    num_completions: int = field(
        default=0, metadata={"help": "Test images whose bottom half is completed (needs a data source)."}
    )
    completions_per_image: int = field(default=4, metadata={"help": "Completions drawn for each half image."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature (paper figures: 1.0 and 0.98)."})
    top_k: int | None = field(default=None, metadata={"help": "Sample from the k most likely colours only."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling: smallest set with this much mass."})
    batch_size: int = field(default=16, metadata={"help": "Sequences generated at once."})
    seed: int = field(default=0, metadata={"help": "Same seed, same images."})
    static_cache: bool = field(
        default=False,
        metadata={
            "help": "GPU: generate(cache_implementation='static'), transformers' fixed-shape cache replayed as CUDA "
            "graphs (the first batch pays the compilation). The CPU needs no flag: plain generate() already runs "
            "IGPT's image decoder there, which this flag leaves unchanged."
        },
    )
    display_scale: int = field(default=1, metadata={"help": "Enlarge the PNG grids this many times (nearest neighbour)."})

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be positive, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must lie in (0, 1], got {self.top_p}")
        if self.num_samples < 0 or self.num_completions < 0 or self.completions_per_image < 1:
            raise ValueError("--num_samples and --num_completions must be >= 0, --completions_per_image >= 1")
        if self.num_samples == 0 and self.num_completions == 0:
            raise ValueError("Nothing to sample: --num_samples and --num_completions are both 0")
        if self.batch_size < 1 or self.display_scale < 1:
            raise ValueError("--batch_size and --display_scale must be >= 1")


@torch.no_grad()
def generate(model, prompts: torch.LongTensor, length: int, args: SamplingArguments) -> torch.LongTensor:
    """Continue each prompt (B, P) to `length` tokens after the start token; returns the image tokens (B, length)."""
    outputs = []
    for batch in prompts.split(args.batch_size):
        sequences = model.generate(
            batch.to(model.device),
            attention_mask=torch.ones_like(batch, device=model.device),
            do_sample=True,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            max_length=length + 1,
            pad_token_id=model.config.start_token_id,
            cache_implementation="static" if args.static_cache else None,
        )  # (b, length + 1)
        outputs.append(sequences[:, 1:].cpu())
    return torch.cat(outputs)


def main(argv: list[str] | None = None) -> dict:
    sampling_args, data_args = HfArgumentParser((SamplingArguments, DataArguments)).parse_args_into_dataclasses(args=argv)
    check_local_folder(sampling_args.model_name_or_path, "--model_name_or_path")
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    if sampling_args.num_completions and not data_args.has_source:
        raise ValueError("--num_completions needs images: give --dataset_name, --train_file or --train_dir.")
    config = IGPTConfig.from_pretrained(sampling_args.model_name_or_path)
    if config.objective != "autoregressive":
        raise ValueError(
            f"{sampling_args.model_name_or_path} was trained with the {config.objective} objective; "
            "only autoregressive models define a distribution to sample from."
        )

    device = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
    model = IGPTForCausalImageModeling.from_pretrained(sampling_args.model_name_or_path).to(device).eval()
    tokenizer = ImageTokenizer.from_pretrained(sampling_args.model_name_or_path)
    tokenizer.check_fits(model.config, sampling_args.model_name_or_path)
    length, start = tokenizer.sequence_length, tokenizer.start_token_id
    os.makedirs(sampling_args.output_dir, exist_ok=True)
    written = {}

    if sampling_args.num_samples:
        set_seed(sampling_args.seed)
        prompts = torch.full((sampling_args.num_samples, 1), start)
        samples = generate(model, prompts, length, sampling_args)  # (S, N)
        nrow = math.ceil(math.sqrt(sampling_args.num_samples))
        written["samples"] = os.path.join(sampling_args.output_dir, "samples.png")
        enlarge(tokenizer.decode_grid(samples, nrow=nrow), sampling_args.display_scale).save(written["samples"])

    if sampling_args.num_completions:
        splits = load_image_splits(data_args, seed=sampling_args.seed, with_test=True)
        images = splits.splits["test"][: sampling_args.num_completions][splits.image_column]
        originals = tokenizer(images)  # (C, N)
        height, width = tokenizer.grid_size
        prompts = completion_prompts(originals, width, height, start)  # (C, 1 + top half), as the pipeline keeps
        set_seed(sampling_args.seed)
        k = sampling_args.completions_per_image
        completions = generate(model, prompts.repeat_interleave(k, dim=0), length, sampling_args).view(len(originals), k, length)
        decoded = tokenizer.decode(torch.cat([completions, originals[:, None]], dim=1).flatten(0, 1))
        rows = [decoded[i * (k + 1) : (i + 1) * (k + 1)] for i in range(len(originals))]  # k completions, original
        kept_rows = (prompts.shape[1] - 1) // width
        rows = [[hide_unseen_rows(row[-1], kept_rows, height)] + row for row in rows]
        written["completions"] = os.path.join(sampling_args.output_dir, "completions.png")
        grid = make_image_grid([image for row in rows for image in row], nrow=k + 2)
        enlarge(grid, sampling_args.display_scale).save(written["completions"])

    with open(os.path.join(sampling_args.output_dir, "sampling.json"), "w") as file:
        json.dump({**asdict(sampling_args), "files": written}, file, indent=2)
    for name, path in written.items():
        logger.info("wrote %s to %s", name, path)
    return written


def enlarge(image: Image.Image, scale: int) -> Image.Image:
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def hide_unseen_rows(image: Image.Image, kept_rows: int, grid_height: int) -> Image.Image:
    """What the model was given: the top `kept_rows` of `grid_height` token rows, the rest black."""
    pixels = np.array(image)
    pixels[pixels.shape[0] * kept_rows // grid_height :] = 0
    return Image.fromarray(pixels)


if __name__ == "__main__":
    main()
