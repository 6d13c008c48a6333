"""Data for the example scripts: the one place that loads images and turns them into Image GPT batches.

    source (Hub / parquet / imagefolder / bundled digits) -> DatasetDict(train, validation[, test])
        -> ImageTokenizer (palette colours or VQ-VAE codes) -> pixel_ids (B, N)
        -> collator -> the model's inputs for the objective (AR: start token + shift; BERT: as is)

Protocol (paper, Section 3.1): when a dataset has no validation split, 10% of `train` is held out as validation for
every choice that is tuned, and `test` is touched only to report.
"""

import io
import logging
import math
import os
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from image_processing import IGPTImageProcessor, make_image_grid
from modeling_igpt.compatibility import check_model_fits_tokenizer, tokenizer_grid, tokenizer_num_tokens
from modeling_igpt.modeling_igpt import random_bert_mask


logger = logging.getLogger(__name__)

DIGITS = "digits"
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class")
VALIDATION_SPLITS = ("validation", "valid", "val")
VQVAE_FOLDER = "vqvae"


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


def load_raw(data_args: DataArguments) -> datasets.DatasetDict:
    if data_args.dataset_name == DIGITS:
        return digits_dataset()
    if data_args.dataset_name is not None:
        return datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=data_args.cache_dir
        )
    if data_args.train_file is not None:
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        return datasets.load_dataset("parquet", data_files={k: v for k, v in files.items() if v})
    folders = {"train": data_args.train_dir, "validation": data_args.validation_dir, "test": data_args.test_dir}
    for folder in filter(None, folders.values()):
        if not os.path.isdir(folder):
            raise ValueError(f"Image folder {folder} does not exist.")
    return datasets.load_dataset(
        "imagefolder", data_files={k: os.path.join(v, "**") for k, v in folders.items() if v}
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
    raw = load_raw(data_args)
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


# ---------------------------------------------------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------------------------------------------------


class ImageTokenizer:
    """Images -> the prior's token ids (B, N): nearest palette colours, or VQ-VAE codes of the processor's pixels.

    With a palette (paper, 32x32 / 48x48), N is the image's pixel count and the vocabulary K clusters + 1 start
    token. With a VQ-VAE (96x96 / 192x192 inputs), the processor only resizes to the VQ-VAE's input resolution and
    N is the latent grid (48x48), with the codebook as vocabulary.
    """

    def __init__(self, processor: IGPTImageProcessor, vqvae=None, source: str | None = None):
        if vqvae is None and processor.n_clusters is None:
            raise ValueError("The image processor has no palette: fit one (image_processing.fit_palette) or pass a VQ-VAE.")
        self.processor = processor
        self.vqvae = vqvae.eval() if vqvae is not None else None
        self.source = source  # the folder it was loaded from, named in errors

    @classmethod
    def from_pretrained(cls, path: str) -> "ImageTokenizer":
        """The processor saved in `path`, plus the VQ-VAE in `path/vqvae` when the model was trained on codes."""
        processor = IGPTImageProcessor.from_pretrained(path)
        vqvae = None
        if os.path.isdir(os.path.join(path, VQVAE_FOLDER)):
            from modeling_igpt.modeling_vqvae import IGPTVQVAEModel

            vqvae = IGPTVQVAEModel.from_pretrained(os.path.join(path, VQVAE_FOLDER))
        return cls(processor, vqvae, source=path)

    def check_fits(self, config, model_source: str | None = None):
        """ValueError naming both sources unless the model `config` reads this tokenizer's ids (the package's one rule:
        height x width == max_position_embeddings, tokens + 1 == vocab_size)."""
        check_model_fits_tokenizer(config, self.processor, self.vqvae, model_source, self.source)

    def save_pretrained(self, path: str):
        self.processor.save_pretrained(path)
        if self.vqvae is not None:
            self.vqvae.save_pretrained(os.path.join(path, VQVAE_FOLDER))

    @property
    def num_tokens(self) -> int:
        """Token ids that stand for image content: palette clusters or VQ-VAE codes."""
        return tokenizer_num_tokens(self.processor, self.vqvae)

    @property
    def vocab_size(self) -> int:
        return self.num_tokens + 1

    @property
    def start_token_id(self) -> int:
        return self.num_tokens

    @property
    def grid_size(self) -> tuple[int, int]:
        """(height, width) of the token grid the model sees."""
        return tokenizer_grid(self.processor, self.vqvae)

    @property
    def sequence_length(self) -> int:
        height, width = self.grid_size
        return height * width

    @torch.no_grad()
    def __call__(self, images) -> torch.LongTensor:
        if self.vqvae is None:
            return self.processor(images, return_tensors="pt")["input_ids"]  # (B, H*W)
        pixel_values = self.processor(images, do_color_quantize=False, return_tensors="pt")["pixel_values"]
        return self.vqvae.encode(pixel_values.to(self.vqvae.device, self.vqvae.dtype)).cpu()  # (B, h*w)

    @torch.no_grad()
    def decode(self, token_ids: torch.LongTensor) -> list[Image.Image]:
        """Token ids (B, N) without the start token -> PIL images."""
        if self.vqvae is None:
            return self.processor.decode(token_ids, *self.grid_size)
        pixel_values = self.vqvae.decode(token_ids.to(self.vqvae.device))  # (B, 3, H, W) in [-1, 1]
        pixels = ((pixel_values.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return [Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in pixels]

    def decode_grid(self, token_ids: torch.LongTensor, nrow: int = 8) -> Image.Image:
        return make_image_grid(self.decode(token_ids), nrow=nrow)


def tokenize_transform(
    tokenizer: ImageTokenizer, image_column: str, label_column: str | None = None, augment_padding: int = 0
):
    """A `with_transform` function: a batch of images (and labels) -> {"pixel_ids": (B, N)[, "labels": (B,)]},
    with the paper's random pad-crop-flip when `augment_padding` > 0 (training splits only)."""

    def transform(batch):
        pixel_ids = tokenizer(batch[image_column])  # (B, N)
        if augment_padding:
            pixel_ids = random_pad_crop_flip(pixel_ids, tokenizer.grid_size, augment_padding)
        output = {"pixel_ids": pixel_ids}
        if label_column is not None:
            output["labels"] = torch.as_tensor(batch[label_column])
        return output

    return transform


def model_inputs(pixel_ids: torch.LongTensor, objective: str, start_token_id: int) -> torch.LongTensor:
    """What the trunk reads: AR models [start, x_1 .. x_{N-1}] (as in pretraining), BERT models the pixels as they are."""
    if objective == "bert":
        return pixel_ids
    start = torch.full_like(pixel_ids[:, :1], start_token_id)
    return torch.cat([start, pixel_ids[:, :-1]], dim=1)  # (B, N)


@dataclass
class PretrainingCollator:
    """pixel_ids (B, N) -> AR: input_ids [start, x_1..x_{N-1}], labels [-100, x_1..x_N] (every pixel is a target);
    BERT: input_ids = x, the mask M drawn here with `mask_probability`, bool_masked_pos = M, labels = x on M and -100
    elsewhere.

    Drawing M where the batch is made (as transformers' DataCollatorForLanguageModeling does) keeps the labels honest:
    Trainer normalises the loss by `num_items_in_batch` = the count of labels != -100, which must be the masked pixels
    the model scores, not every pixel (that reported a loss ~1/0.15 = 6.7x too low).
    """

    objective: str
    start_token_id: int
    mask_probability: float = 0.15
    generator: torch.Generator | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pixel_ids = torch.stack([example["pixel_ids"] for example in examples])  # (B, N)
        if self.objective == "bert":
            bool_masked_pos = random_bert_mask(pixel_ids.shape, self.mask_probability, pixel_ids.device, self.generator)
            if not bool_masked_pos.any():  # a batch with nothing to predict would divide by zero items
                bool_masked_pos.view(-1)[torch.randint(pixel_ids.numel(), (1,), generator=self.generator)] = True
            labels = pixel_ids.masked_fill(~bool_masked_pos, -100)  # (B, N): targets on M only
            return {"input_ids": pixel_ids, "bool_masked_pos": bool_masked_pos, "labels": labels}
        labels = F.pad(pixel_ids, (1, 0), value=-100)  # (B, N + 1)
        return {"input_ids": model_inputs(pixel_ids, self.objective, self.start_token_id), "labels": labels}


@dataclass
class ClassificationCollator:
    """pixel_ids (B, N) and labels (B,) -> the classifier's input_ids (as `model_inputs`) and labels."""

    objective: str
    start_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pixel_ids = torch.stack([example["pixel_ids"] for example in examples])  # (B, N)
        return {
            "input_ids": model_inputs(pixel_ids, self.objective, self.start_token_id),
            "labels": torch.stack([torch.as_tensor(example["labels"]) for example in examples]),
        }


def random_pad_crop_flip(
    pixel_ids: torch.LongTensor, grid_size: tuple[int, int], padding: int, generator: torch.Generator | None = None
) -> torch.LongTensor:
    """The paper's CIFAR augmentation (from Wide ResNets): reflect-pad `padding` pixels on each side, take a random
    crop of the original size, flip it horizontally with probability 1/2.

    Applied to the token grid: colour quantization acts on each pixel alone, so it commutes with these moves and this
    equals augmenting the pixels first. (B, N) -> (B, N).
    """
    height, width = grid_size
    batch = pixel_ids.shape[0]
    grid = pixel_ids.view(batch, 1, height, width).float()  # reflect padding needs floats; ids < 2^24 stay exact
    padded = F.pad(grid, (padding, padding, padding, padding), mode="reflect")  # (B, 1, H + 2p, W + 2p)
    tops = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    lefts = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    crops = []
    for image, top, left, flip in zip(padded, tops.tolist(), lefts.tolist(), flips.tolist()):
        crop = image[:, top : top + height, left : left + width]  # (1, H, W)
        crops.append(crop.flip(-1) if flip else crop)
    return torch.stack(crops).long().view(batch, height * width)


def bits_per_dim(loss_nats: float) -> float:
    """Mean negative log-likelihood per token, in bits: the paper's unit."""
    return loss_nats / math.log(2)
