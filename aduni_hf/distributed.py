"""The global contrastive batch under several processes: an all-gather that gradients flow back through.

`accelerate.utils.gather` has no gradient, which silently changes the loss (docs/hf_stack.md, "Distributed contrastive loss"). Backward of an
all-gather is a reduce-scatter: every rank's rows get the gradient that all ranks' anchors send them. With the
loss averaged over each rank's anchors and DDP averaging parameter gradients over ranks, training then follows
the gradient of the single-process loss on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        return torch.cat(_all_gather(tensor))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # sum over ranks of d(loss_r)/d(gathered)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def gather_contrast_set(
    features: torch.Tensor, labels: torch.Tensor, enabled: bool = True
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The global contrast set: (features of every rank with gradient, their labels, offset of this rank's rows).

    In one process, or with `enabled` False (a per-process contrast set): (features, labels, 0). Every rank must
    hold the same number of rows (accelerate's `even_batches`, the default, pads the last batch so that it does).
    """
    if not enabled or world_size() == 1:
        return features, labels, 0
    rows = [int(r) for r in _all_gather(torch.tensor([features.shape[0]], device=features.device))]
    if len(set(rows)) != 1:
        raise RuntimeError(f"ranks hold different batch sizes {rows}; keep accelerate's even_batches on")
    offset = dist.get_rank() * features.shape[0]
    return _AllGatherWithGrad.apply(features), torch.cat(_all_gather(labels)), offset


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor`, concatenated along dim 0 in rank order, without gradient.

    For training state that every process must hold alike (PaCo's key queue: the official `concat_all_gather`
    of MoCo and PaCo), never for a loss's contrast set (use `gather_contrast_set`). In one process: `tensor`
    itself. Every rank must hold the same number of rows.
    """
    if world_size() == 1:
        return tensor
    rows = [int(r) for r in _all_gather(torch.tensor([tensor.shape[0]], device=tensor.device))]
    if len(set(rows)) != 1:
        raise RuntimeError(f"ranks hold different batch sizes {rows}; keep accelerate's even_batches on")
    return torch.cat(_all_gather(tensor.detach()))
