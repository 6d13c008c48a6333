#!/usr/bin/env python
"""Fine-tune a pretrained Image GPT for image classification (Chen et al., 2020, Sections 2.3 and 3.1).

    pretrained checkpoint -> IGPTForImageClassification: zero-initialised linear head on the pooled f^L
    loss = L_clf + generative_loss_weight * L_gen (the checkpoint's own objective; paper: weight 1)

Paper protocol: same Adam settings as pretraining but no cosine schedule (constant learning rate), early stopping at
the best validation accuracy, 10% of train held out as validation, the Wide-ResNet CIFAR augmentation (reflect-pad 4,
random 32x32 crop, horizontal flip), test accuracy reported once at the end. BERT checkpoints are evaluated with the
modal prediction over 5 random masks (Section 4.6). Accuracy comes from a local `evaluate` module (works offline).

    python examples/run_image_classification.py --model_name_or_path igpt-s-cifar10 --dataset_name uoft-cs/cifar10 \\
        --output_dir igpt-s-cifar10-classifier --per_device_train_batch_size 64 --learning_rate 1e-4 --num_train_epochs 20
"""

import logging
import os
from dataclasses import dataclass, field

import evaluate
import numpy as np
import torch.nn.functional as F
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

from data import ClassificationCollator, DataArguments, ImageTokenizer, load_image_splits, tokenize_transform
from modeling_igpt import IGPTForImageClassification
from training import (
    FiniteTrainer,
    check_local_folder,
    paper_optimiser_defaults,
    parse_arguments,
    publish_or_card,
    resolve_checkpoint,
    setup_logging,
    train_and_evaluate,
)


logger = logging.getLogger(__name__)

ACCURACY_METRIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", "accuracy")


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


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, TrainingArguments), classification_defaults(), argv
    )
    setup_logging(training_args)
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

    accuracy = evaluate.load(ACCURACY_METRIC)

    def compute_metrics(prediction):
        return accuracy.compute(predictions=np.argmax(prediction.predictions, axis=-1), references=prediction.label_ids)

    trainer = MaskEnsembleTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=ClassificationCollator(model.config.objective, tokenizer.start_token_id),
        processing_class=tokenizer.processor,
        compute_metrics=compute_metrics,
        # early stopping picks the best evaluation, so it needs --load_best_model_at_end (the default here)
        callbacks=[EarlyStoppingCallback(model_args.early_stopping_patience)] if training_args.load_best_model_at_end else [],
        num_masks=model_args.num_masks,
    )

    metrics = train_and_evaluate(trainer, checkpoint, tokenizer, splits.skipped_metrics)
    test_metrics = trainer.predict(test_dataset, metric_key_prefix="test").metrics
    trainer.log_metrics("test", test_metrics)
    trainer.save_metrics("test", test_metrics)

    card = {
        "model_name": os.path.basename(os.path.normpath(training_args.output_dir)),
        "finetuned_from": model_args.model_name_or_path,
        "tasks": "image-classification",
        "tags": ["igpt", "image-gpt", "image-classification"],
        "dataset": data_args.dataset_name or data_args.train_file or data_args.train_dir,
    }
    publish_or_card(trainer, **card)
    return {**metrics, **test_metrics}


if __name__ == "__main__":
    main()
