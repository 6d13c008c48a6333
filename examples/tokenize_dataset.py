#!/usr/bin/env python
"""Tokenize an image dataset once into token shards (uint16 ids), to pretrain on many times: ImageNet-sized data
without decoding, resizing and quantizing every image in every epoch.

    images (Hub / parquet / imagefolder; the same train / validation split as run_pretraining.py)
        -> palette colours (given, or fitted here by k-means) or VQ-VAE codes
        -> OUTPUT/<split>/<index>-of-<count>.parquet + the processor + token_shards.json
           (modeling_igpt/token_shards.py)

    python examples/tokenize_dataset.py --train_file cifar10/train.parquet --output_dir cifar10-tokens \\
        --image_size 32 --n_clusters 512 --num_proc 8
    python examples/run_pretraining.py --tokenized_dataset cifar10-tokens --output_dir igpt-s ...

A stopped run resumes: the same command writes only the shards that are missing. For `--streaming` training on N
processes, give the train split at least N shards (a multiple of N keeps them even): `--images_per_shard`.
"""

import logging
import os
from dataclasses import dataclass, field

from transformers import HfArgumentParser


from image_processing import IGPTImageProcessor, fit_palette
from image_processing.data import DataArguments, load_image_splits
from modeling_igpt import IGPTVQVAEModel, ImageTokenizer
from modeling_igpt.token_shards import INFO_FILE, TokenShardsInfo, write_token_shards


logger = logging.getLogger(__name__)


@dataclass
class TokenizeArguments:
    output_dir: str = field(metadata={"help": "Folder for the shards (a rerun into it resumes)."})
    image_processor_name: str | None = field(
        default=None, metadata={"help": "A saved IGPTImageProcessor (palette, e.g. a model folder) to tokenize with."}
    )
    vqvae_model: str | None = field(default=None, metadata={"help": "A trained IGPTVQVAEModel: write its codes."})
    n_clusters: int = field(default=512, metadata={"help": "Palette size K when fitting one (paper: 512)."})
    image_size: int = field(default=32, metadata={"help": "Model resolution when fitting a palette (paper: 32 or 48)."})
    palette_max_pixels: int | None = field(
        default=None, metadata={"help": "Fit the palette on at most this many training pixels (default: all)."}
    )
    splits: str = field(default="train,validation", metadata={"help": "Comma-separated splits to tokenize."})
    keep_labels: bool = field(default=False, metadata={"help": "Store each image's class as a `label` column."})
    images_per_shard: int = field(default=10_000, metadata={"help": "Images per parquet shard (at most)."})
    num_proc: int = field(default=1, metadata={"help": "Worker processes, one shard at a time each."})
    batch_size: int = field(default=256, metadata={"help": "Images tokenized per call."})
    seed: int = field(default=42, metadata={"help": "The validation split's and the palette's seed (as in training)."})


def build_tokenizer(args: TokenizeArguments, splits) -> ImageTokenizer:
    """The given processor (+ VQ-VAE), the one a resumed run saved, or a palette fitted on the train split."""
    vqvae = IGPTVQVAEModel.from_pretrained(args.vqvae_model) if args.vqvae_model is not None else None
    if args.image_processor_name is not None:
        return ImageTokenizer(IGPTImageProcessor.from_pretrained(args.image_processor_name), vqvae)
    if vqvae is not None:
        size = vqvae.config.image_size
        return ImageTokenizer(IGPTImageProcessor(size={"height": size, "width": size}, do_color_quantize=False), vqvae)
    if os.path.isfile(os.path.join(args.output_dir, INFO_FILE)):  # resuming: the palette fitted the first time
        return ImageTokenizer.from_pretrained(args.output_dir)
    logger.info("Fitting a %d-colour palette at %dx%d", args.n_clusters, args.image_size, args.image_size)
    processor = fit_palette(
        splits.splits["train"],
        n_clusters=args.n_clusters,
        size=args.image_size,
        max_pixels=args.palette_max_pixels,
        image_column=splits.image_column,
        seed=args.seed,
    )
    return ImageTokenizer(processor)


def main(argv: list[str] | None = None) -> TokenShardsInfo:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    data_args, args = HfArgumentParser((DataArguments, TokenizeArguments)).parse_args_into_dataclasses(args=argv)
    wanted = [name.strip() for name in args.splits.split(",") if name.strip()]
    splits = load_image_splits(data_args, seed=args.seed, with_labels=args.keep_labels)
    unknown = [name for name in wanted if name not in splits.splits]
    if unknown:
        raise ValueError(f"--splits names {unknown}, but the data has {sorted(splits.splits)}.")
    tokenizer = build_tokenizer(args, splits)
    source = data_args.dataset_name or data_args.train_file or data_args.train_dir
    return write_token_shards(
        {name: splits.splits[name] for name in wanted},
        tokenizer,
        args.output_dir,
        image_column=splits.image_column,
        label_column=splits.label_column,
        images_per_shard=args.images_per_shard,
        num_proc=args.num_proc,
        batch_size=args.batch_size,
        source=source,
    )


if __name__ == "__main__":
    main()
