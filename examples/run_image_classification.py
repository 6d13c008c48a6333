#!/usr/bin/env python
"""Fine-tune a pretrained Image GPT for image classification (Chen et al., 2020, Sections 2.3 and 3.1).

    pretrained checkpoint -> IGPTForImageClassification: zero-initialised linear head on the pooled f^L
    loss = L_clf + generative_loss_weight * L_gen (the checkpoint's own objective; paper: weight 1)

Paper protocol: same Adam settings as pretraining but no cosine schedule (constant learning rate), early stopping at
the best validation accuracy, 10% of train held out as validation, the Wide-ResNet CIFAR augmentation (reflect-pad 4,
random 32x32 crop, horizontal flip), test accuracy reported once at the end. BERT checkpoints are evaluated with the
modal prediction over 5 random masks (Section 4.6).

It trains, evaluates on validation and predicts the test split (`--do_train`, `--do_eval`, `--do_predict`, each true
by default; `--do_train false` evaluates --model_name_or_path as it is). Arguments come from the command line or from
one JSON file (`run_image_classification.py args.json`).

    python examples/run_image_classification.py --model_name_or_path igpt-s-cifar10 --dataset_name uoft-cs/cifar10 \\
        --output_dir igpt-s-cifar10-classifier --per_device_train_batch_size 64 --learning_rate 1e-4 --num_train_epochs 20
"""

import json
import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
import transformers
from transformers import EarlyStoppingCallback, HfArgumentParser, TrainingArguments, set_seed

from image_processing.data import DataArguments, load_image_splits
from modeling_igpt import (
    ClassificationCollator,
    FiniteTrainer,
    IGPTForImageClassification,
    ImageTokenizer,
    tokenize_transform,
)
from modeling_igpt.training import (
    check_local_folder,
    check_output_dir,
    paper_optimiser_defaults,
    resolve_checkpoint,
    train_evaluate_predict,
    write_model_card,
)


logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "The pretrained Image GPT checkpoint (with its processor) to fine-tune."})
    classifier_pooled_layer: int = field(
        default=-1, metadata={"help": "Which hidden state f^l the head pools (-1 = the final n^L, as in the paper)."}
    )
    generative_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of L_gen in L_clf + w * L_gen (paper: 1; 0 = classification loss only)."}
    )
    augment: bool = field(default=True, metadata={"help": "The paper's random pad-crop-flip on training images."})
    augment_padding: int | None = field(
        default=None, metadata={"help": "Reflection padding of the random crop (default: side / 8, i.e. 4 at 32x32)."}
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better validation accuracy."}
    )
    num_masks: int = field(default=5, metadata={"help": "BERT checkpoints: masks in the modal-prediction ensemble."})


def classification_defaults() -> dict:
    return {
        **paper_optimiser_defaults(),
        "do_train": True,
        "do_eval": True,
        "do_predict": True,  # test accuracy, reported once at the end
        "learning_rate": 3e-4,
        "lr_scheduler_type": "constant",  # "we do not employ a cosine schedule" when fine-tuning
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "load_best_model_at_end": True,
        "metric_for_best_model": "accuracy",
        "greater_is_better": True,
        "logging_steps": 10,
    }


class MaskEnsembleTrainer(FiniteTrainer):
    """For BERT checkpoints, predictions are the modal class over `num_masks` random masks (one-hot "logits")."""

    def __init__(self, *args, num_masks: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_masks = num_masks

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        classifier = self.accelerator.unwrap_model(model)
        if classifier.config.objective == "bert" and not prediction_loss_only:
            votes = classifier.predict_with_mask_ensemble(inputs["input_ids"], num_masks=self.num_masks)  # (B,)
            logits = F.one_hot(votes, classifier.config.num_labels).to(logits.dtype)
        return loss, logits, labels


def parse_arguments(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Command-line flags, or one JSON file of them, over this script's defaults."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**classification_defaults())
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:  # parse_json_file would leave out the defaults above
            return parser.parse_dict({**classification_defaults(), **json.load(file)})
    return parser.parse_args_into_dataclasses(args=argv)


def compute_metrics(prediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_arguments(argv)
    check_output_dir(training_args.output_dir)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)
    check_local_folder(model_args.model_name_or_path, "--model_name_or_path")
    if model_args.generative_loss_weight < 0:
        raise ValueError(f"--generative_loss_weight must be >= 0 (paper: 1), got {model_args.generative_loss_weight}")
    checkpoint = resolve_checkpoint(training_args)

    splits = load_image_splits(data_args, seed=training_args.seed, with_labels=True, with_test=True)
    tokenizer = ImageTokenizer.from_pretrained(model_args.model_name_or_path)
    names = splits.label_names
    model = IGPTForImageClassification.from_pretrained(
        model_args.model_name_or_path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: index for index, name in enumerate(names)},
        classifier_pooled_layer=model_args.classifier_pooled_layer,
        generative_loss_weight=model_args.generative_loss_weight,
    )
    tokenizer.check_fits(model.config, model_args.model_name_or_path)

    padding = 0
    if model_args.augment:
        padding = model_args.augment_padding if model_args.augment_padding is not None else max(1, tokenizer.grid_size[0] // 8)
    column, label = splits.image_column, splits.label_column
    train_dataset = splits.splits["train"].with_transform(tokenize_transform(tokenizer, column, label, padding))
    eval_dataset = splits.splits["validation"].with_transform(tokenize_transform(tokenizer, column, label))
    test_dataset = splits.splits["test"].with_transform(tokenize_transform(tokenizer, column, label))

    trainer = MaskEnsembleTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=ClassificationCollator(),
        processing_class=tokenizer.processor,
        compute_metrics=compute_metrics,
        # early stopping picks the best evaluation, so it needs --load_best_model_at_end (the default here)
        callbacks=[EarlyStoppingCallback(model_args.early_stopping_patience)] if training_args.load_best_model_at_end else [],
        num_masks=model_args.num_masks,
    )

    metrics = train_evaluate_predict(trainer, training_args, checkpoint, tokenizer, splits.skipped_metrics, test_dataset)
    write_model_card(
        trainer, training_args, model_args.model_name_or_path, "image-classification",
        ["igpt", "image-gpt", "image-classification"], data_args.dataset_name or data_args.train_file or data_args.train_dir,
    )  # fmt: skip
    return metrics


if __name__ == "__main__":
    main()
