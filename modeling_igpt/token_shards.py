"""Token shards: an image dataset tokenized once (palette colours or VQ-VAE codes, as uint16 ids) and trained on many
times, from disk or streamed.

    splits of images -> ImageTokenizer -> PATH/<split>/<index>-of-<count>.parquet   pixel_ids: uint16 x N [, label]
                                          PATH/preprocessor_config.json [+ vqvae/]  the tokenizer that made them
                                          PATH/token_shards.json                    fingerprint, grid, rows per split
    PATH -> load_token_shards(PATH, split[, streaming=True]) -> datasets Dataset / IterableDataset, int64 pixel_ids

Writing is resumable: each shard appears under its final name only once complete, and a rerun writes only the
missing ones (after checking that it would write the same ones with the same tokenizer). Reading refuses an
unfinished set, and `check_token_shards` refuses shards made by another tokenizer than the model's: two palettes of
the same size fit the same model (the package's one rule, `compatibility.py`) but give the ids other colours, so the
fingerprint of the tokenizer that wrote the shards (its full processor config, and the VQ-VAE's weights) must match.
"""

import hashlib
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets.distributed import split_dataset_by_node

from .compatibility import check_model_fits_tokenizer, tokenizer_grid, tokenizer_num_tokens
from .image_tokenizer import ImageTokenizer


logger = logging.getLogger(__name__)

INFO_FILE = "token_shards.json"
FORMAT_VERSION = 1
PIXEL_IDS = "pixel_ids"
MAX_UINT16_TOKENS = 1 << 16


# ---------------------------------------------------------------------------------------------------------------------
# What made the shards
# ---------------------------------------------------------------------------------------------------------------------


def tokenizer_fingerprint(processor, vqvae=None) -> str:
    """sha256 of what decides the ids: the processor's settings (palette, size, resampling...) and, for codes, the
    VQ-VAE's config and weights. Where a processor or VQ-VAE was loaded from does not count."""
    settings = {key: value for key, value in processor.to_dict().items() if not key.startswith("_")}
    for key in ("auto_map", "processor_class"):  # where the code comes from, not what it computes
        settings.pop(key, None)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    if vqvae is not None:
        config = {key: value for key, value in vqvae.config.to_dict().items() if not key.startswith("_")}
        for key in ("transformers_version", "name_or_path"):
            config.pop(key, None)
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(vqvae.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class SplitPlan:
    num_rows: int
    num_shards: int

    def file_names(self) -> list[str]:
        return [f"{index:05d}-of-{self.num_shards:05d}.parquet" for index in range(self.num_shards)]


@dataclass
class TokenShardsInfo:
    """`token_shards.json`: the tokenizer that made the shards, the ids' grid and range, and the shards per split."""

    fingerprint: str
    grid_size: tuple[int, int]
    num_tokens: int
    splits: dict[str, SplitPlan]
    label_column: str | None = None
    source: str | None = None
    complete: bool = False
    format_version: int = FORMAT_VERSION
    id_dtype: str = "uint16"

    @property
    def sequence_length(self) -> int:
        height, width = self.grid_size
        return height * width

    def same_plan(self, other: "TokenShardsInfo") -> list[str]:
        """What differs between two plans for the same folder (empty when a rerun may resume this one)."""
        differences = []
        if self.fingerprint != other.fingerprint:
            differences.append("the tokenizer (palette / VQ-VAE) differs")
        for name in sorted(set(self.splits) | set(other.splits)):
            if self.splits.get(name) != other.splits.get(name):
                differences.append(f"split {name!r}: {self.splits.get(name)} before, {other.splits.get(name)} now")
        if self.label_column != other.label_column:
            differences.append(f"label column {self.label_column!r} before, {other.label_column!r} now")
        return differences

    def save(self, path: str):
        temporary = os.path.join(path, INFO_FILE + ".tmp")
        with open(temporary, "w") as file:
            json.dump(asdict(self), file, indent=2)
        os.replace(temporary, os.path.join(path, INFO_FILE))

    @classmethod
    def load(cls, path: str) -> "TokenShardsInfo":
        file_path = os.path.join(path, INFO_FILE)
        if not os.path.isfile(file_path):
            raise FileNotFoundError(
                f"{path} holds no token shards ({INFO_FILE} is missing): make them with examples/tokenize_dataset.py."
            )
        with open(file_path) as file:
            values = json.load(file)
        if values.get("format_version") != FORMAT_VERSION:
            version = values.get("format_version")
            raise ValueError(f"{file_path} has format version {version}; this igpt reads {FORMAT_VERSION}.")
        values["grid_size"] = tuple(values["grid_size"])
        values["splits"] = {name: SplitPlan(**plan) for name, plan in values["splits"].items()}
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------


def shard_features(sequence_length: int, label_feature=None) -> datasets.Features:
    features = {PIXEL_IDS: datasets.Sequence(datasets.Value("uint16"), length=sequence_length)}
    if label_feature is not None:
        features["label"] = label_feature
    return datasets.Features(features)


@dataclass
class _ShardJob:
    """What every shard writer needs; set once per run and inherited by the worker processes (fork)."""

    splits: Mapping[str, datasets.Dataset]
    tokenizer: object
    output_dir: str
    image_column: str
    label_column: str | None
    plans: dict[str, SplitPlan]
    batch_size: int
    features: dict[str, datasets.Features] = field(default_factory=dict)


_JOB: _ShardJob | None = None


def _start_worker(job: _ShardJob):
    global _JOB
    _JOB = job
    torch.set_num_threads(1)  # one process per core: num_proc workers, not num_proc x threads


def _write_shard(task: tuple[str, int]) -> int:
    """Tokenize shard `index` of `split` and write it under its final name (written to a temporary name first)."""
    split, index = task
    job, plan = _JOB, _JOB.plans[split]
    images = job.splits[split].shard(plan.num_shards, index, contiguous=True)
    pixel_ids, labels = [], []
    for batch in images.iter(batch_size=job.batch_size):
        pixel_ids.append(job.tokenizer(batch[job.image_column]).numpy())  # (B, N) int64
        if job.label_column is not None:
            labels.append(np.asarray(batch[job.label_column], dtype=np.int64))
    pixel_ids = np.concatenate(pixel_ids).astype(np.uint16)  # ids < num_tokens <= 65,536, checked before starting
    columns = [pa.FixedSizeListArray.from_arrays(pa.array(pixel_ids.reshape(-1)), pixel_ids.shape[1])]
    if job.label_column is not None:
        columns.append(pa.array(np.concatenate(labels)))
    table = pa.Table.from_arrays(columns, schema=job.features[split].arrow_schema)  # the schema carries the features
    path = os.path.join(job.output_dir, split, plan.file_names()[index])
    pq.write_table(table, path + ".tmp")
    os.replace(path + ".tmp", path)
    return len(pixel_ids)


def write_token_shards(
    splits: Mapping[str, datasets.Dataset],
    tokenizer,
    output_dir: str,
    image_column: str,
    label_column: str | None = None,
    images_per_shard: int = 10_000,
    num_proc: int = 1,
    batch_size: int = 256,
    source: str | None = None,
) -> TokenShardsInfo:
    """Tokenize every split of images into `output_dir` as parquet shards of uint16 ids (see the module docstring).

    `tokenizer` is an `ImageTokenizer` (images -> (B, N) ids; `.processor`, `.vqvae`, `.save_pretrained`). Shards hold
    `images_per_shard` images at most, contiguous and in the split's order (`Dataset.shard(contiguous=True)`): read
    in file order they are the split's rows. `num_proc` processes write shards in parallel. A rerun writes only the
    shards that are missing and refuses a folder planned with another tokenizer or other splits.
    """
    num_tokens = tokenizer_num_tokens(tokenizer.processor, tokenizer.vqvae)
    if num_tokens is None or num_tokens > MAX_UINT16_TOKENS:
        raise ValueError(f"Token shards store uint16 ids: the tokenizer has {num_tokens} tokens (at most 65,536).")
    if images_per_shard < 1 or num_proc < 1:
        raise ValueError(f"images_per_shard and num_proc must be positive, got {images_per_shard} and {num_proc}.")
    plans = {
        name: SplitPlan(len(split), max(1, math.ceil(len(split) / images_per_shard)))
        for name, split in splits.items()
        if len(split)
    }
    info = TokenShardsInfo(
        fingerprint=tokenizer_fingerprint(tokenizer.processor, tokenizer.vqvae),
        grid_size=tuple(tokenizer_grid(tokenizer.processor, tokenizer.vqvae)),
        num_tokens=num_tokens,
        splits=plans,
        label_column=label_column,
        source=source,
    )
    os.makedirs(output_dir, exist_ok=True)
    if os.path.isfile(os.path.join(output_dir, INFO_FILE)):
        before = TokenShardsInfo.load(output_dir)
        differences = before.same_plan(info)
        if differences:
            raise ValueError(
                f"{output_dir} already holds token shards planned otherwise ({'; '.join(differences)}): give a new "
                "folder, or rerun with the tokenizer and data that made them."
            )
        if before.complete:
            logger.info("%s already holds every shard; nothing to do.", output_dir)
            return before
    tokenizer.save_pretrained(output_dir)
    info.save(output_dir)  # the plan, complete=False, before any shard

    label_feature = None
    if label_column is not None:
        label_feature = next(iter(splits.values())).features[label_column]
    job = _ShardJob(splits, tokenizer, output_dir, image_column, label_column, plans, batch_size)
    job.features = {name: shard_features(info.sequence_length, label_feature) for name in plans}
    tasks = []
    for name, plan in plans.items():
        os.makedirs(os.path.join(output_dir, name), exist_ok=True)
        done = [os.path.isfile(os.path.join(output_dir, name, file)) for file in plan.file_names()]
        tasks += [(name, index) for index, finished in enumerate(done) if not finished]
        logger.info("%s: %d images in %d shards, %d already written", name, plan.num_rows, plan.num_shards, sum(done))
    if num_proc == 1 or len(tasks) <= 1:
        _start_worker(job)
        written = [_write_shard(task) for task in tasks]
    else:
        with multiprocessing.get_context("fork").Pool(num_proc, initializer=_start_worker, initargs=(job,)) as pool:
            written = list(pool.imap_unordered(_write_shard, tasks))
    logger.info("Wrote %d shards (%d images) into %s", len(written), sum(written), output_dir)
    info.complete = True
    info.save(output_dir)
    return info


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------


def read_token_shards_info(path: str) -> TokenShardsInfo:
    """The shards' `token_shards.json`, refusing a set whose writing has not finished."""
    info = TokenShardsInfo.load(path)
    if not info.complete:
        raise ValueError(
            f"The token shards in {path} are incomplete (the tokenization was stopped): rerun the same "
            "examples/tokenize_dataset.py command to write the missing shards."
        )
    return info


def check_token_shards(
    path: str, processor, vqvae=None, config=None, model_source: str | None = None
) -> TokenShardsInfo:
    """ValueError unless the shards in `path` were made by this tokenizer (`processor`, plus `vqvae` for codes) and,
    when `config` is given, the model reads them (`compatibility.check_model_fits_tokenizer`)."""
    info = read_token_shards_info(path)
    if tokenizer_fingerprint(processor, vqvae) != info.fingerprint:
        theirs = "VQ-VAE codes" if os.path.isdir(os.path.join(path, "vqvae")) else "palette colours"
        raise ValueError(
            f"The token shards in {path} were made by another image tokenizer ({theirs}, the processor saved in "
            f"{path}) than this model's{f' ({model_source})' if model_source else ''}: the same ids would stand for "
            "other colours. Tokenize the images again with the model's processor (examples/tokenize_dataset.py "
            "--image_processor_name MODEL), or train a new model on the shards' own processor."
        )
    if config is not None:
        check_model_fits_tokenizer(config, processor, vqvae, model_source, path)
    return info


def load_token_shards(
    path: str,
    split: str = "train",
    streaming: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    cache_dir: str | None = None,
):
    """One split of the shards as a `datasets.Dataset` (memory-mapped), or with `streaming` an `IterableDataset` that
    reads the parquet files as it goes; `pixel_ids` (N,) and `label` come out as int64 tensors.

    `rank` / `world_size` give this process its own shards (`datasets.distributed.split_dataset_by_node`: whole files
    when their count divides by `world_size`) for loops that do not shard themselves. Trainer does: under `accelerate
    launch` pass the whole stream with `accelerator_config.dispatch_batches=False` and each process reads its files.
    """
    info = read_token_shards_info(path)
    if split not in info.splits:
        raise ValueError(f"The token shards in {path} have no {split!r} split, only {sorted(info.splits)}.")
    plan = info.splits[split]
    files = [os.path.join(path, split, name) for name in plan.file_names()]
    missing = [file for file in files if not os.path.isfile(file)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {plan.num_shards} {split} shards in {path} are missing: {missing[:3]}"
        )
    dataset = datasets.load_dataset(
        "parquet", data_files={split: files}, split=split, streaming=streaming, cache_dir=cache_dir
    )
    if not streaming and len(dataset) != plan.num_rows:
        raise ValueError(f"The {split} shards in {path} hold {len(dataset)} rows, {INFO_FILE} says {plan.num_rows}.")
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("Give both rank and world_size, or neither.")
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return dataset.with_format("torch")  # datasets' torch format gives integer columns as int64


# ---------------------------------------------------------------------------------------------------------------------
# Pretraining on shards (examples/run_pretraining.py --tokenized_dataset)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TokenShardArguments:
    """Pretrain on token shards (examples/tokenize_dataset.py) instead of tokenizing images on the fly."""

    tokenized_dataset: str | None = field(
        default=None,
        metadata={"help": "A folder of token shards (examples/tokenize_dataset.py): train on its train and validation "
                  "splits instead of --dataset_name / --train_file / --train_dir."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the training shards (an IterableDataset; needs --max_steps): each process reads only "
                  "its own files, shuffled within a buffer of --shuffle_buffer_size images."},
    )
    shuffle_buffer_size: int = field(default=10_000, metadata={"help": "Images in the streaming shuffle buffer."})


def shards_tokenizer(path: str, source: str | None = None) -> ImageTokenizer:
    """The tokenizer to train with on the shards in `path`: the one saved in `source` (a model, checkpoint or processor
    folder) after checking that it made the shards, else the shards' own (then saved with the model)."""
    if source is None:
        tokenizer = ImageTokenizer.from_pretrained(path)
    else:
        tokenizer = ImageTokenizer.from_pretrained(source)
    check_token_shards(path, tokenizer.processor, tokenizer.vqvae, model_source=source)
    return tokenizer


def pretraining_datasets(arguments: TokenShardArguments, seed: int, training_args=None):
    """(train, validation) datasets of `pixel_ids` from the shards, the train split streamed when asked.

    Streaming under Trainer: `training_args.accelerator_config.dispatch_batches` is set to False so that each process
    reads its own shard files (accelerate shards a datasets IterableDataset by file, as `split_dataset_by_node` does)
    instead of the main process reading every batch and sending it out.
    """
    path = arguments.tokenized_dataset
    train = load_token_shards(path, "train", streaming=arguments.streaming)
    if arguments.streaming:
        train = train.shuffle(seed=seed, buffer_size=arguments.shuffle_buffer_size)
        if training_args is not None:
            training_args.accelerator_config.dispatch_batches = False
    return train, load_token_shards(path, "validation")


__all__ = [
    "TokenShardArguments",
    "TokenShardsInfo",
    "pretraining_datasets",
    "shards_tokenizer",
    "check_token_shards",
    "load_token_shards",
    "read_token_shards_info",
    "tokenizer_fingerprint",
    "write_token_shards",
]
