"""The Trainer example scripts read their arguments from the command line or from one JSON file, over the same
script defaults (the paper's optimiser settings)."""

import json

import pytest

from example_scripts import load_example


@pytest.mark.parametrize("script", ["run_pretraining", "run_image_classification", "run_vqvae"])
def test_a_json_file_gives_the_arguments_its_flags_give(script, tmp_path):
    module = load_example(script)
    values = {"output_dir": str(tmp_path / "out"), "dataset_name": "digits", "learning_rate": 0.01, "max_steps": 3}
    if script == "run_image_classification":
        values["model_name_or_path"] = str(tmp_path / "model")
    (tmp_path / "arguments.json").write_text(json.dumps(values))
    flags = [item for key, value in values.items() for item in (f"--{key}", str(value))]

    *from_file, file_training = module.parse_arguments([str(tmp_path / "arguments.json")])
    *from_flags, flag_training = module.parse_arguments(flags)
    assert from_file == from_flags  # the script's own dataclasses, field by field
    for name in ("output_dir", "learning_rate", "max_steps", "adam_beta2", "weight_decay", "lr_scheduler_type",
                 "do_train", "do_eval", "remove_unused_columns", "label_names", "batch_eval_metrics"):  # fmt: skip
        assert getattr(file_training, name) == getattr(flag_training, name), name
    assert (file_training.learning_rate, file_training.max_steps) == (0.01, 3)
    assert file_training.remove_unused_columns is False  # a script default, not TrainingArguments' own (True)
