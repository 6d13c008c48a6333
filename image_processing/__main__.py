"""Fit a k-means colour palette on a dataset and write an IGPTImageProcessor folder.

    python -m image_processing --train_file ../shared/data/cifar10/train.parquet --output_dir palette
    python -m image_processing --train_dir path/to/imagefolder --output_dir palette --size 32
    python -m image_processing --dataset_name uoft-cs/cifar10 --output_dir palette --max_pixels 10000000

The folder holds preprocessor_config.json (the palette as `clusters`) and image_processing_igpt.py, so that
`AutoImageProcessor.from_pretrained(folder)` works with `import image_processing` or with `trust_remote_code=True`.
"""

import argparse
import time

from .data import load_image_dataset
from .palette import fit_palette


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset_name", help="a Hub dataset, e.g. uoft-cs/cifar10")
    source.add_argument("--train_file", nargs="+", help="parquet file(s)")
    source.add_argument("--train_dir", help="an imagefolder directory")
    parser.add_argument("--dataset_config_name", help="the Hub dataset's configuration")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", help="default: the first of image, img, pixel_values")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--n_clusters", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, help="resize (shorter side + centre crop) to size x size before counting")
    parser.add_argument("--max_pixels", type=int, help="fit on at most this many pixels (a seeded random sample)")
    parser.add_argument("--no_progress", action="store_true")
    return parser.parse_args(argv)


def load_images(args):
    """The `--split` of a Hub dataset, or all the given parquet files or imagefolder (the example scripts' loader)."""
    dataset = load_image_dataset(
        args.dataset_name,
        args.dataset_config_name,
        parquet_files={"train": args.train_file},
        image_folders={"train": args.train_dir},
    )
    split = args.split if args.dataset_name else "train"  # local files and folders are read as one split
    if split not in dataset:
        raise ValueError(f"--split {split}: the dataset has the splits {list(dataset)}.")
    return dataset[split]


def main(argv=None):
    args = parse_args(argv)
    dataset = load_images(args)
    start = time.perf_counter()
    processor = fit_palette(
        dataset,
        n_clusters=args.n_clusters,
        seed=args.seed,
        size=args.size,
        max_pixels=args.max_pixels,
        progress=not args.no_progress,
        image_column=args.image_column,
    )
    processor.save_pretrained(args.output_dir)
    print(f"{processor.n_clusters}-colour palette fitted in {time.perf_counter() - start:.1f} s -> {args.output_dir}")
    return processor


if __name__ == "__main__":
    main()
