"""Image datasets for Image GPT: one place that loads images from a source and splits them as the paper does.

    source (Hub / parquet / imagefolder / scikit-learn's bundled digits) -> DatasetDict(train, validation[, test])

`DataArguments` are the data flags of every example script; `load_image_splits` reads them. `load_image_dataset`
loads a source's raw splits (the palette command line uses it alone).

Protocol (paper, Section 3.1): when a dataset has no validation split, 10% of `train` is held out as validation for
every choice that is tuned, and `test` is touched only to report.
"""

import io
import logging
import os
from dataclasses import dataclass, field

import datasets
import numpy as np
from PIL import Image


logger = logging.getLogger(__name__)

DIGITS = "digits"
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class")
VALIDATION_SPLITS = ("validation", "valid", "val")


@dataclass
class DataArguments:
    """Where the images come from. Give one of: --dataset_name, --train_file (parquet), --train_dir (imagefolder)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A dataset on the Hub (e.g. uoft-cs/cifar10), or 'digits' for scikit-learn's bundled 8x8 digits "
            "(1,797 images, 10 classes, works offline)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={"help": "Local parquet file(s) with the training images."})
    validation_file: str | None = field(default=None, metadata={"help": "Local parquet file with validation images."})
    test_file: str | None = field(default=None, metadata={"help": "Local parquet file with test images."})
    train_dir: str | None = field(default=None, metadata={"help": "Local imagefolder (class sub-folders) to train on."})
    validation_dir: str | None = field(default=None, metadata={"help": "Local imagefolder of validation images."})
    test_dir: str | None = field(default=None, metadata={"help": "Local imagefolder of test images."})
    image_column_name: str | None = field(
        default=None, metadata={"help": f"Column holding the images (default: the first of {IMAGE_COLUMNS})."}
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": f"Column holding the labels (default: the first of {LABEL_COLUMNS})."}
    )
    validation_split_percentage: float = field(
        default=10.0, metadata={"help": "Percent of train held out as validation when there is no validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training images."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many validation (and test) images."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub datasets are cached."})
    image_check: str = field(
        default="decode",
        metadata={
            "help": "Before training, read every image once so that a bad one fails the run at loading, naming its "
            "split and row: 'decode' (full decode; measured on one core of a 2-core x86-64 VM: 0.16 ms per 8x8 PNG, "
            "4.9 ms per 500x375 JPEG), 'header' (0.1 ms: catches what is not an image, not truncated data), or 'none'.",
            "choices": ["decode", "header", "none"],
        },
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Drop the images --image_check finds unreadable (counted, logged) instead of stopping."},
    )

    @property
    def has_source(self) -> bool:
        return any(source is not None for source in (self.dataset_name, self.train_file, self.train_dir))

    def check(self):
        """Fail on impossible arguments before anything is loaded."""
        sources = [self.dataset_name is not None, self.train_file is not None, self.train_dir is not None]
        if sum(sources) != 1:
            raise ValueError("Give exactly one data source: --dataset_name, --train_file (parquet) or --train_dir.")
        if self.dataset_config_name is not None and (self.dataset_name is None or self.dataset_name == DIGITS):
            raise ValueError("--dataset_config_name applies to a Hub --dataset_name only.")
        for name in ("train_file", "validation_file", "test_file"):
            path = getattr(self, name)
            if path is not None and not path.endswith(".parquet"):
                raise ValueError(f"--{name} must be a parquet file (got {path}); use --train_dir for image folders.")
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(f"--validation_split_percentage must lie in (0, 100), got {self.validation_split_percentage}")


@dataclass
class ImageSplits:
    """The splits plus what the scripts need to read them."""

    splits: datasets.DatasetDict
    image_column: str
    label_column: str | None = None
    label_names: list[str] | None = None
    skipped_images: dict[str, int] = field(default_factory=dict)  # split -> rows dropped by --skip_bad_images

    @property
    def skipped_metrics(self) -> dict[str, int]:
        """For train_results.json: `skipped_bad_images_<split>` for each split loaded (0 when none were bad)."""
        return {f"skipped_bad_images_{name}": count for name, count in self.skipped_images.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> datasets.DatasetDict:
    """scikit-learn's digits as 8x8 grayscale PIL images (0..16 stretched to 0..255), a stratified 80/20 train/test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    dataset = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image, mode="L") for image in pixels], "label": digits.target.tolist()},
        features=features,
    )
    split = dataset.train_test_split(test_size=test_fraction, stratify_by_column="label", seed=seed)
    return datasets.DatasetDict(train=split["train"], test=split["test"])


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    parquet_files: dict | None = None,
    image_folders: dict | None = None,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """The raw splits of one source: a Hub dataset (or "digits", scikit-learn's bundled 8x8 digits), parquet files
    `{split: path or paths}`, or imagefolders `{split: folder}` (class sub-folders); splits given as None are left out."""
    if dataset_name == DIGITS:
        return digits_dataset()
    if dataset_name is not None:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
    parquet_files = {split: files for split, files in (parquet_files or {}).items() if files}
    if parquet_files:
        return datasets.load_dataset("parquet", data_files=parquet_files)
    image_folders = {split: folder for split, folder in (image_folders or {}).items() if folder}
    if not image_folders:
        raise ValueError("Give one image source: a dataset name, parquet files or image folders.")
    for folder in image_folders.values():
        if not os.path.isdir(folder):
            raise ValueError(f"Image folder {folder} does not exist.")
    return datasets.load_dataset(
        "imagefolder", data_files={split: os.path.join(folder, "**") for split, folder in image_folders.items()}
    )


SCALAR_FEATURES = (datasets.Value, datasets.ClassLabel)


def find_column(dataset: datasets.Dataset, wanted: str | None, defaults: tuple[str, ...], kind, what: str) -> str:
    """The named column, else the first default name present, else the first column of feature type `kind`; an image
    column must hold images or arrays (not numbers or strings), a label column scalars (not images)."""
    columns = dataset.column_names
    flag = "--image_column_name" if what == "image" else "--label_column_name"
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"There is no {what} column {wanted!r}: the dataset has columns {columns}.")
        name = wanted
    else:
        name = next((name for name in defaults if name in columns), None)
        name = name or next((name for name, feature in dataset.features.items() if isinstance(feature, kind)), None)
        if name is None:
            raise ValueError(f"Found no {what} column (tried {list(defaults)}): the dataset has columns {columns}; pass {flag}.")
    feature = dataset.features[name]
    if (what == "image") == isinstance(feature, SCALAR_FEATURES):
        kinds = {column: type(feature).__name__ for column, feature in dataset.features.items()}
        holds = "single values" if what == "image" else "images or arrays"
        raise ValueError(
            f"Column {name!r} holds {holds} ({type(feature).__name__}), not {what}s: pass {flag} with the {what} "
            f"column (the dataset's columns and their types: {kinds})."
        )
    return name


def load_image_splits(
    data_args: DataArguments, seed: int = 0, with_labels: bool = False, with_test: bool = False
) -> ImageSplits:
    """Load the data and return train / validation (carved from train when missing) / test splits.

    `with_labels` finds the label column (and fails early if there is none); `with_test` carves a test split from
    train as well when the data has none (with a warning: results on it are then not comparable to published ones).
    """
    data_args.check()
    raw = load_image_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        parquet_files={"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file},
        image_folders={"train": data_args.train_dir, "validation": data_args.validation_dir, "test": data_args.test_dir},
        cache_dir=data_args.cache_dir,
    )
    splits = datasets.DatasetDict({name: raw[name] for name in raw})
    for name in VALIDATION_SPLITS:
        if name in splits and name != "validation":
            splits["validation"] = splits.pop(name)
    if "train" not in splits:
        raise ValueError(f"The dataset has no 'train' split, only {list(splits)}.")
    train = splits["train"]
    image_column = find_column(train, data_args.image_column_name, IMAGE_COLUMNS, datasets.Image, "image")
    splits, skipped = check_images(splits, image_column, data_args.image_check, data_args.skip_bad_images)
    label_column = label_names = None
    if with_labels:
        label_column = find_column(train, data_args.label_column_name, LABEL_COLUMNS, datasets.ClassLabel, "label")
        splits, label_names = encode_labels(splits, label_column)
    # The same held-out rows whether or not a script reads labels: pretraining and the probe must agree on what
    # validation is, so a labelled dataset is split by its class column either way.
    stratify = label_column if label_column is not None else class_column(train, data_args.label_column_name)

    if with_test and "test" not in splits:
        logger.warning("The data has no test split: holding out %.0f%% of train as test.", data_args.validation_split_percentage)
        carved = splits["train"].train_test_split(
            test_size=data_args.validation_split_percentage / 100, stratify_by_column=stratify, seed=seed
        )
        splits["train"], splits["test"] = carved["train"], carved["test"]
    if "validation" not in splits:
        carved = splits["train"].train_test_split(
            test_size=data_args.validation_split_percentage / 100, stratify_by_column=stratify, seed=seed
        )
        splits["train"], splits["validation"] = carved["train"], carved["test"]

    if data_args.max_train_samples is not None:
        splits["train"] = splits["train"].shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(splits["train"]))))
    if data_args.max_eval_samples is not None:
        for name in ("validation", "test"):
            if name in splits:
                # a seeded random subset, not the first rows: a file sorted by class would give a few classes only
                subset = splits[name].shuffle(seed=seed).select(range(min(data_args.max_eval_samples, len(splits[name]))))
                splits[name] = subset
    keep = [image_column] + ([label_column] if label_column else [])
    splits = datasets.DatasetDict({name: split.select_columns(keep) for name, split in splits.items()})
    return ImageSplits(splits, image_column, label_column, label_names, skipped)


def class_column(dataset: datasets.Dataset, wanted: str | None) -> str | None:
    """The dataset's ClassLabel column (`wanted`, else the first of LABEL_COLUMNS), or None when it has none."""
    for name in [wanted] if wanted is not None else LABEL_COLUMNS:
        if isinstance(dataset.features.get(name), datasets.ClassLabel):
            return name
    return None


def check_images(
    splits: datasets.DatasetDict, column: str, mode: str = "decode", skip: bool = False, batch_size: int = 256
) -> tuple[datasets.DatasetDict, dict[str, int]]:
    """Read every image of an `Image` column once (`mode` "decode": fully; "header": the file header only), so that
    a bad one stops the run here, naming its split and row (as in the files), rather than mid-training; with `skip`,
    drop such rows instead (counted per split, logged)."""
    if mode == "none" or not isinstance(splits["train"].features[column], datasets.Image):
        return splits, {}  # arrays: nothing to decode

    def read(item: dict):
        with Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") is not None else item["path"]) as image:
            if mode == "decode":
                image.load()

    checked, skipped = {}, {}
    for name, split in splits.items():
        undecoded = split.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        bad = []  # (row, error)
        for start, batch in zip(range(0, len(split), batch_size), undecoded.iter(batch_size=batch_size)):
            for offset, item in enumerate(batch[column]):
                try:
                    read(item)
                except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
                    bad.append((start + offset, f"{type(error).__name__}: {error}"))
        if bad and not skip:
            rows = ", ".join(str(row) for row, _ in bad[:5])
            raise ValueError(
                f"{len(bad)} of {len(split)} images in the {name} split cannot be decoded (rows {rows}); row "
                f"{bad[0][0]}: {bad[0][1]}. Pass --skip_bad_images to train without them."
            )
        if bad:
            logger.warning("Skipping %d undecodable images in the %s split (rows %s)", len(bad), name, [row for row, _ in bad[:20]])
            bad_rows = {row for row, _ in bad}
            split = split.select([row for row in range(len(split)) if row not in bad_rows])
        checked[name], skipped[name] = split, len(bad)
    return datasets.DatasetDict(checked), skipped


def encode_labels(splits: datasets.DatasetDict, column: str) -> tuple[datasets.DatasetDict, list[str]]:
    """Class names and integer labels 0..C-1 in every split (string or integer labels become a shared ClassLabel)."""
    for name, split in splits.items():
        missing = [row for row, value in enumerate(split[column]) if value is None]
        if missing:
            raise ValueError(f"{len(missing)} {name} rows have no label in column {column!r} (rows {missing[:5]}...).")
    feature = splits["train"].features[column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        values = sorted({value for split in splits.values() for value in split[column]})
        if all(isinstance(value, int) for value in values):
            names = [str(index) for index in range(max(values[-1], 0) + 1)]
        else:
            names = [str(value) for value in values]
            splits = datasets.DatasetDict(
                {name: split.cast_column(column, datasets.Value("string")) for name, split in splits.items()}
            )
        label_feature = datasets.ClassLabel(names=names)
        splits = datasets.DatasetDict({name: split.cast_column(column, label_feature) for name, split in splits.items()})
    for name, split in splits.items():
        labels = np.asarray(split[column])  # (rows,)
        bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
        if len(bad):
            raise ValueError(
                f"{len(bad)} of {len(labels)} {name} rows have labels outside the classes 0..{len(names) - 1} in column "
                f"{column!r} (rows {bad[:5].tolist()}, labels {labels[bad[:5]].tolist()}); datasets writes -1 for "
                "'no label' (often a test split without labels): drop those rows or give labelled files."
            )
    if len(names) < 2:
        raise ValueError(f"Column {column!r} has {len(names)} class ({names}): a classifier needs at least two.")
    return splits, names
