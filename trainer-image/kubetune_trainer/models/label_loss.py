"""The causal LM loss computed only where there are labels: hidden states are gathered at the
positions whose next token carries loss before the LM head, so prompt tokens and padding cost
neither the head's matmul nor a softmax over the vocabulary.

For an instruction row of 128 tokens of which 45 are prompt, and a 49,152-word vocabulary,
the head's logits shrink from 128 x 49,152 to 83 x 49,152 floats. Installed as hooks on the
transformers model, so the model is still called through whatever wraps it (peft, DDP, FSDP)
and `model(**batch, num_items_in_batch=n).loss` keeps its meaning: the sum of the label
tokens' losses divided by n. A call without labels (generation) is left alone; with labels,
`logits` holds the gathered positions only, as a (label tokens, vocabulary) matrix.
"""

import torch
import torch.nn.functional as F

from kubetune_trainer.formats.samples import IGNORE_INDEX


class LabelPositionsLoss:
    """Hooks on a causal LM's outermost module (`model`: the peft model, whose forward calls
    the transformers model's forward directly, not through its hooks) and on its output
    embeddings (the LM head)."""

    def __init__(self, model: torch.nn.Module):
        self.targets: torch.Tensor | None = None  # the current call's next-token labels
        self.where: torch.Tensor | None = None  # which (row, position) pairs carry loss
        self.items: int | None = None
        model.register_forward_pre_hook(self.take_labels, with_kwargs=True)
        model.register_forward_hook(self.loss, with_kwargs=True)
        model.get_output_embeddings().register_forward_pre_hook(self.gather)

    def take_labels(self, module, args, kwargs):
        """Keep the labels from transformers' own loss over every position."""
        labels = kwargs.pop("labels", None)
        self.items = kwargs.pop("num_items_in_batch", None)
        if labels is None:
            self.targets = self.where = None
            return args, kwargs
        # Position t predicts token t+1; the last position predicts nothing.
        shifted = labels[:, 1:]
        self.where = shifted != IGNORE_INDEX
        self.targets = shifted[self.where]
        return args, kwargs

    def gather(self, module, args):
        if self.where is None:
            return None
        (hidden,) = args
        return (hidden[:, :-1][self.where.to(hidden.device)],)

    def loss(self, module, args, kwargs, output):
        if self.where is None:
            return None
        logits = output.logits
        total = F.cross_entropy(logits.float(), self.targets.to(logits.device), reduction="sum")
        # Like transformers: the sum over num_items_in_batch when given, else the mean.
        output.loss = total / (self.items if self.items is not None else max(len(self.targets), 1))
        self.targets = self.where = None
        return output
