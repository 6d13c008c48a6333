"""Batches of token ids -> what an Image GPT model reads for each objective, like transformers'
DataCollatorForLanguageModeling: the autoregressive shift behind a start token, or the BERT mask drawn where the
batch is made, with labels -100 off the mask.

    {"pixel_ids": (N,)} x B -> AR:   input_ids [start, x_1 .. x_{N-1}], labels [-100, x_1 .. x_N]
                            -> BERT: input_ids x, bool_masked_pos M, labels x on M and -100 elsewhere
    {"pixel_ids": (N,), "labels": ()} x B -> the classifier's input_ids (the pixel ids as they are) and class labels
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .modeling_igpt import model_inputs, random_bert_mask


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
    """pixel_ids (B, N) and labels (B,) -> the classifier's input_ids (the pixel ids: it adds the start token itself)
    and labels."""

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.stack([example["pixel_ids"] for example in examples]),  # (B, N)
            "labels": torch.stack([torch.as_tensor(example["labels"]) for example in examples]),  # (B,)
        }
