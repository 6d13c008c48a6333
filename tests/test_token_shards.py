"""Token shards (modeling_igpt/token_shards.py, examples/tokenize_dataset.py): the ids on disk are the ids the
tokenizer gives on the fly, a stopped tokenization resumes without rewriting finished shards, shards made by another
tokenizer are refused, streaming reads the same rows and splits them between processes."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from example_scripts import load_example
from image_processing import IGPTImageProcessor
from image_processing.data import DataArguments, load_image_splits
from modeling_igpt import IGPTConfig, ImageTokenizer, token_shards
from modeling_igpt.token_shards import check_token_shards, load_token_shards, read_token_shards_info, tokenizer_fingerprint


tokenize_dataset = load_example("tokenize_dataset")


NUM_IMAGES, SIZE, CLUSTERS = 60, 4, 8


def palette(seed: int) -> IGPTImageProcessor:
    clusters = np.random.default_rng(seed).uniform(-1, 1, (CLUSTERS, 3))
    return IGPTImageProcessor(clusters=clusters, size={"height": SIZE, "width": SIZE})


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> str:
    """A small labelled image dataset as a parquet file, as a user's data would come."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)) for _ in range(NUM_IMAGES)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    dataset = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(NUM_IMAGES)]}, features=features)
    path = str(tmp_path_factory.mktemp("images") / "train.parquet")
    dataset.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("processor"))
    palette(seed=1).save_pretrained(path)
    return path


def tokenize(image_file, processor_dir, output_dir, *extra) -> token_shards.TokenShardsInfo:
    argv = ["--train_file", image_file, "--image_processor_name", processor_dir, "--output_dir", str(output_dir)]
    return tokenize_dataset.main([*argv, "--images_per_shard", "10", *extra])


@pytest.fixture(scope="module")
def shards(image_file, processor_dir, tmp_path_factory) -> str:
    output_dir = tmp_path_factory.mktemp("shards")
    tokenize(image_file, processor_dir, output_dir, "--num_proc", "2", "--keep_labels", "true")
    return str(output_dir)


def on_the_fly(image_file, processor_dir, split: str) -> tuple[torch.Tensor, list[int]]:
    """What run_pretraining tokenizes from the images: the same split, row by row."""
    splits = load_image_splits(DataArguments(train_file=image_file), seed=42, with_labels=True)
    rows = splits.splits[split][:]
    tokenizer = ImageTokenizer.from_pretrained(processor_dir)
    return tokenizer(rows[splits.image_column]), rows[splits.label_column]


def test_shards_hold_the_ids_of_on_the_fly_tokenization(shards, image_file, processor_dir):
    info = read_token_shards_info(shards)
    assert info.complete and info.grid_size == (SIZE, SIZE) and info.num_tokens == CLUSTERS
    assert info.splits["train"].num_shards == 6  # 54 training images, at most 10 per shard: 6 of 9
    for split in ("train", "validation"):
        expected_ids, expected_labels = on_the_fly(image_file, processor_dir, split)
        stored = load_token_shards(shards, split)
        assert stored.features["pixel_ids"].feature.dtype == "uint16"
        assert stored[:]["pixel_ids"].dtype == torch.int64
        torch.testing.assert_close(stored[:]["pixel_ids"], expected_ids, rtol=0, atol=0)
        assert stored[:]["label"].tolist() == expected_labels


def test_stopped_tokenization_resumes_with_the_missing_shards(shards, image_file, processor_dir, tmp_path, monkeypatch):
    output_dir = tmp_path / "stopped"
    write_shard, calls = token_shards._write_shard, []

    def stop_at_the_third_shard(task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write_shard(task)

    monkeypatch.setattr(token_shards, "_write_shard", stop_at_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        tokenize(image_file, processor_dir, output_dir, "--keep_labels", "true")
    monkeypatch.setattr(token_shards, "_write_shard", write_shard)
    with pytest.raises(ValueError, match="incomplete"):
        load_token_shards(str(output_dir), "train")
    finished = {path: path.stat().st_mtime_ns for path in (output_dir / "train").glob("*.parquet")}
    assert len(finished) == 2 and not list((output_dir / "train").glob("*.tmp"))

    tokenize(image_file, processor_dir, output_dir, "--keep_labels", "true")
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # not written again
    for split in ("train", "validation"):
        resumed, clean = load_token_shards(str(output_dir), split)[:], load_token_shards(shards, split)[:]
        torch.testing.assert_close(resumed["pixel_ids"], clean["pixel_ids"], rtol=0, atol=0)


def test_rerun_with_another_palette_is_refused(shards, image_file, tmp_path):
    other = tmp_path / "other"
    palette(seed=2).save_pretrained(other)
    with pytest.raises(ValueError, match="planned otherwise.*tokenizer"):
        tokenize(image_file, str(other), shards, "--keep_labels", "true")


def test_shards_of_another_tokenizer_or_shape_are_refused(shards, processor_dir):
    own = IGPTImageProcessor.from_pretrained(processor_dir)
    config = IGPTConfig(vocab_size=CLUSTERS + 1, max_position_embeddings=SIZE * SIZE, num_hidden_layers=1, hidden_size=8,
                        num_attention_heads=1)  # fmt: skip
    check_token_shards(shards, own, config=config)  # the processor that made them, a model that reads them
    assert tokenizer_fingerprint(own) == tokenizer_fingerprint(palette(seed=1))  # where it was loaded from: no matter
    with pytest.raises(ValueError, match="another image tokenizer"):
        check_token_shards(shards, palette(seed=2), config=config)  # same size, other colours: fits, but wrong
    longer = IGPTConfig(vocab_size=CLUSTERS + 1, max_position_embeddings=64, num_hidden_layers=1, hidden_size=8,
                        num_attention_heads=1)  # fmt: skip
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        check_token_shards(shards, own, config=longer)


def test_streaming_reads_the_same_rows_and_splits_them_by_node(shards):
    stored = load_token_shards(shards, "train")[:]["pixel_ids"]
    streamed = torch.stack([row["pixel_ids"] for row in load_token_shards(shards, "train", streaming=True)])
    torch.testing.assert_close(streamed, stored, rtol=0, atol=0)
    stream = load_token_shards(shards, "train", streaming=True)
    assert isinstance(stream, datasets.IterableDataset) and stream.n_shards == 6
    halves = [
        [row["pixel_ids"] for row in load_token_shards(shards, "train", streaming=True, rank=rank, world_size=2)]
        for rank in range(2)
    ]
    assert [len(half) for half in halves] == [27, 27]  # 3 whole shards of 9 images per process
    every_image = sorted(tuple(row.tolist()) for row in stored)
    assert sorted(tuple(row.tolist()) for row in halves[0] + halves[1]) == every_image  # each once, on one process


def test_missing_and_unknown_shards_are_named(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="token_shards.json is missing"):
        load_token_shards(str(tmp_path))
    with pytest.raises(ValueError, match="no 'test' split"):
        load_token_shards(shards, "test")


def pretrain(output_dir, *data: str) -> list[float]:
    """run_pretraining for 3 steps of 8 images on a tiny new model; the logged loss of each step."""
    run_pretraining = load_example("run_pretraining")
    run_pretraining.main([
        *data, "--output_dir", str(output_dir), "--num_hidden_layers", "1", "--hidden_size", "16",
        "--num_attention_heads", "2", "--max_steps", "3", "--per_device_train_batch_size", "8", "--logging_steps", "1",
        "--save_strategy", "no", "--eval_strategy", "no", "--do_eval", "false", "--disable_tqdm", "true",
        "--seed", "42",  # the seed tokenize_dataset split validation with: the same training rows
    ])  # fmt: skip
    with open(output_dir / "trainer_state.json") as file:
        return [entry["loss"] for entry in json.load(file)["log_history"] if "loss" in entry]


def test_training_from_shards_gives_the_losses_of_on_the_fly_tokenization(shards, image_file, processor_dir, tmp_path):
    on_the_fly = pretrain(tmp_path / "images", "--train_file", image_file, "--image_processor_name", processor_dir)
    from_shards = pretrain(tmp_path / "shards", "--tokenized_dataset", shards)  # a new model takes the shards' palette
    assert len(on_the_fly) == 3 and len(set(on_the_fly)) > 1
    assert from_shards == on_the_fly  # same rows, same sampler order, same batches
    saved = IGPTImageProcessor.from_pretrained(tmp_path / "shards")
    assert tokenizer_fingerprint(saved) == read_token_shards_info(shards).fingerprint

    streamed = pretrain(tmp_path / "streamed", "--tokenized_dataset", shards, "--streaming", "true")
    assert len(streamed) == 3 and all(np.isfinite(streamed))  # another order (shuffled stream), same data


def test_training_refuses_shards_of_another_palette_and_two_sources(shards, image_file, tmp_path):
    other = tmp_path / "other"
    palette(seed=2).save_pretrained(other)
    with pytest.raises(ValueError, match="another image tokenizer"):
        pretrain(tmp_path / "run", "--tokenized_dataset", shards, "--image_processor_name", str(other))
    with pytest.raises(ValueError, match="not both"):
        pretrain(tmp_path / "run", "--tokenized_dataset", shards, "--train_file", image_file)
