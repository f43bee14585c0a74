"""The encoder's pooled features of an evaluation data set (t-SNE figures, tau-normalisation)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.views import collate_views


@torch.no_grad()
def pooled_features(
    model: nn.Module, dataset, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The encoder's pooled features (n, d) float32 on the CPU, and the labels (n,), of an evaluation dataset."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_views)
    features, labels = [], []
    for batch in loader:
        output = model.base_model(pixel_values=batch["pixel_values"].to(device))
        features.append(output.pooler_output.float().cpu())
        labels.append(batch["labels"])
    return torch.cat(features), torch.cat(labels)
