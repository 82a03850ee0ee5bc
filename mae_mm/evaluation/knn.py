"""Weighted k-nearest-neighbour classification on frozen features.

The protocol of Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance
discrimination"), used as a cheap monitor by DINO and others: features are L2-normalised, the
``k`` training samples with the highest cosine similarity to a query vote for their class with
weight ``exp(similarity / temperature)``, and the class with the largest summed weight wins.
"""
from typing import Callable, Dict, Iterable, Sequence, Tuple

import torch
import torch.nn.functional as F


def knn_class_scores(train_features: torch.Tensor,
                     train_labels: torch.Tensor,
                     query_features: torch.Tensor,
                     num_classes: int,
                     k: int = 20,
                     temperature: float = 0.07,
                     exclude_self: bool = False,
                     chunk_size: int = 1024) -> torch.Tensor:
    """Per-class vote of the ``k`` nearest training samples of every query.

    Args:
        train_features (Tensor): (N, D) features of the labelled samples.
        train_labels (Tensor): (N,) integer labels in ``[0, num_classes)``.
        query_features (Tensor): (Q, D) features to classify.
        num_classes (int): Number of classes C.
        k (int): Neighbours per query (fewer when there are fewer candidates).
        temperature (float): Vote weight ``exp(cos / temperature)``; 0.07 as in Wu et al.
        exclude_self (bool): Leave-one-out: the queries are the training samples, in the same
            order, and sample i is not its own neighbour.
        chunk_size (int): Queries per similarity matrix, to bound memory.

    Returns:
        Tensor: (Q, C) summed vote weights; ``argmax`` is the prediction.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f'k-NN needs k >= 1 and temperature > 0, got k={k}, '
                         f'temperature={temperature}')
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(f'{train_features.shape[0]} training features but '
                         f'{train_labels.shape[0]} labels')
    if exclude_self and query_features.shape[0] != train_features.shape[0]:
        raise ValueError('exclude_self needs the queries to be the training samples')
    if train_labels.numel() and (train_labels.min() < 0 or train_labels.max() >= num_classes):
        raise ValueError(f'labels must lie in [0, {num_classes}), got '
                         f'[{int(train_labels.min())}, {int(train_labels.max())}]')
    candidates = train_features.shape[0] - int(exclude_self)
    if candidates < 1:
        raise ValueError('k-NN needs at least one labelled sample besides the query')
    k = min(k, candidates)
    train = F.normalize(train_features.float(), dim=1)
    queries = F.normalize(query_features.float(), dim=1)
    labels = train_labels.long()
    scores = []
    for start in range(0, queries.shape[0], chunk_size):
        sim = queries[start:start + chunk_size] @ train.T  # (q, N) cosine similarities
        if exclude_self:
            rows = torch.arange(sim.shape[0])
            sim[rows, rows + start] = float('-inf')
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype)
        scores.append(votes.scatter_add_(1, labels[top_idx], weights))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor,
                  topk: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Top-k accuracies in percent, ``{'top1': ..., 'top5': ...}``; k above C is left out.

    Tied scores rank the lower class index first (a stable sort), so results are reproducible.
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    result = {}
    for k in topk:
        if k > scores.shape[1]:
            continue
        hit = (order[:, :k] == labels.long()[:, None]).any(dim=1)
        result[f'top{k}'] = 100.0 * hit.float().mean().item()
    return result


def knn_evaluate(train_features: torch.Tensor, train_labels: torch.Tensor,
                 query_features: torch.Tensor, query_labels: torch.Tensor, num_classes: int,
                 ks: Iterable[int] = (20,), temperature: float = 0.07,
                 exclude_self: bool = False) -> Dict[int, Dict[str, float]]:
    """k-NN accuracy for every ``k`` of ``ks``: ``{k: {'top1': %, 'top5': %}}``."""
    return {
        k: topk_accuracy(
            knn_class_scores(train_features, train_labels, query_features, num_classes, k,
                             temperature, exclude_self), query_labels)
        for k in ks
    }


@torch.no_grad()
def extract_features(encode: Callable[[dict], torch.Tensor],
                     dataloader: Iterable[dict]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of a whole labelled dataloader.

    Args:
        encode (Callable): Maps one batch of the dataloader (mmengine format: ``inputs`` and
            ``data_samples`` with ``gt_label``) to (B, D) features.
        dataloader (Iterable[dict]): Batches, e.g. of :class:`mae_mm.datasets.ImageFolder` with
            ``with_label=True`` and mmpretrain's ``PackInputs``.

    Returns:
        tuple: (N, D) float features on CPU and (N,) long labels.
    """
    features, labels = [], []
    for batch in dataloader:
        features.append(encode(batch).float().cpu())
        labels.append(torch.cat([sample.gt_label.reshape(-1)
                                 for sample in batch['data_samples']]).long().cpu())
    if not features:
        raise ValueError('the dataloader yielded no batch: is the image folder empty?')
    return torch.cat(features), torch.cat(labels)
