"""Training the small heads concept attribution needs: a target head ``f`` and a concept model ``g``.

Both are trained on features the user already has (e.g. a frozen trunk's activations at a layer), full batch
with AdamW, so they are cheap to refit. Multi-label concept heads use BCE with ``pos_weight`` (negatives /
positives per concept), as the paper's recipe does for imbalanced concepts; continuous concepts use MSE.

Example:
    >>> import torch
    >>> x = torch.randn(64, 5)
    >>> labels = torch.stack([(x[:, 0] > 0), (x[:, 1] * x[:, 2] > 0)], 1).float()
    >>> head = train_head(x, check_concept_labels(labels, 64, ["a", "b"]), task="multilabel", hidden=16, epochs=50)
    >>> head(x).shape
    torch.Size([64, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trustlab.errors import EmptyInputError
from trustlab.explain.concept_gradient import ConceptInputError

TASKS = ("multilabel", "multiclass", "regression")


def check_concept_labels(labels: torch.Tensor, n_items: int, names: Sequence[str] | None = None) -> torch.Tensor:
    """Binary concept labels ``(n_items, k)`` as floats, refusing what no concept model can be trained on.

    Args:
        labels: 0/1 (or bool) labels, one row per item, one column per concept.
        n_items: the number of items the labels must describe.
        names: concept names for the error messages.

    Raises:
        EmptyInputError: no items or no concepts.
        ConceptInputError: a shape that does not match ``n_items`` (or is not 2-D), values other than 0/1, or
            a concept whose label is the same for every item (nothing to learn: the message names it).

    Example:
        >>> check_concept_labels(torch.tensor([[1, 0], [0, 1]]), 2).dtype
        torch.float32
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 2:
        raise ConceptInputError(f"concept labels must be (items, concepts), got shape {tuple(labels.shape)}")
    if labels.shape[0] == 0 or labels.shape[1] == 0:
        raise EmptyInputError(f"no concept labels to train on (shape {tuple(labels.shape)})")
    if labels.shape[0] != n_items:
        hint = " (transposed?)" if labels.shape[1] == n_items else ""
        raise ConceptInputError(f"concept labels have {labels.shape[0]} rows for {n_items} items{hint}")
    labels = labels.float()
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ConceptInputError("concept labels must be 0/1 (absent/present)")
    constant = [i for i in range(labels.shape[1]) if labels[:, i].min() == labels[:, i].max()]
    if constant:
        named = [names[i] if names else str(i) for i in constant]
        raise ConceptInputError(f"concept(s) {', '.join(named)} have the same label for every item; drop them or "
                                "add items where they differ")
    return labels


def _loss(task: str, targets: torch.Tensor) -> nn.Module:
    if task == "multiclass":
        return nn.CrossEntropyLoss()
    if task == "regression":
        return nn.MSELoss()
    pos = targets.sum(0)
    return nn.BCEWithLogitsLoss(pos_weight=(len(targets) - pos) / pos.clamp_min(1))


def head_module(in_features: int, out_features: int, hidden: int = 0) -> nn.Sequential:
    """The head :func:`train_head` trains: ``Flatten, Linear`` or ``Flatten, Linear, ReLU, Linear`` (to load
    saved weights into).

    Example:
        >>> head_module(6, 2, hidden=4)(torch.zeros(3, 2, 3)).shape
        torch.Size([3, 2])
    """
    layers: list[nn.Module] = [nn.Flatten()]
    if hidden:
        layers += [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)]
    else:
        layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


def train_head(features: torch.Tensor, targets: torch.Tensor, *, task: str = "multilabel", hidden: int = 0,
               epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-4, batch_size: int = 512,
               seed: int = 0) -> nn.Module:
    """A linear (``hidden=0``) or one-hidden-layer (ReLU) head on flattened features, in eval mode.

    Args:
        features: ``(N, ...)`` inputs, flattened per item.
        targets: ``(N, k)`` 0/1 labels (multilabel), ``(N,)`` class ids (multiclass), or ``(N, k)`` values.
        task: one of :data:`TASKS`.
        hidden: hidden width (0: linear).
        epochs: passes over the data (mini-batches of ``batch_size``, AdamW).
        lr, weight_decay: AdamW settings.
        seed: init and shuffling seed.

    Returns:
        ``nn.Sequential(Flatten, ...)`` mapping ``(N, ...)`` to ``(N, k)`` logits / values.

    Raises:
        ConceptInputError: an unknown task, or features and targets of different lengths.

    Example:
        >>> head = train_head(torch.randn(20, 3), torch.arange(20) % 2, task="multiclass", epochs=5)
        >>> head(torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """
    if task not in TASKS:
        raise ConceptInputError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if len(features) != len(targets):
        raise ConceptInputError(f"{len(features)} feature rows but {len(targets)} targets")
    if len(features) == 0:
        raise EmptyInputError("no items to train the head on")
    torch.manual_seed(seed)
    x = features.reshape(len(features), -1).float()
    y = targets.long() if task == "multiclass" else targets.float().reshape(len(targets), -1)
    out = int(y.max()) + 1 if task == "multiclass" else y.shape[1]
    head = head_module(x.shape[1], out, hidden)
    loss_fn = _loss(task, y)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            loss_fn(head(x[idx]), y[idx]).backward()
            opt.step()
    return head.eval()
