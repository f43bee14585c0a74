"""The paper's batch on a small device: the loss of the whole batch, the activations of one chunk at a time.

`contrast_chunk_size: c` (rows of the view-major batch, V views x B images) trains in the manner of gradient
caching (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021):

1. forward every chunk of c rows without gradient, keeping only its features and logits;
2. compute the loss of the whole batch on them and its gradient with respect to the features and logits;
3. forward each chunk again with gradient and back-propagate the cached gradient into the weights.

BatchNorm therefore normalises one chunk at a time, as each replica of the official 4-GPU DataParallel run did
(c = 64 rows of its 256). The rest is made to match one such computation:

- dropout draws the same masks in both passes: the RNG state before each chunk of pass 1 is replayed in pass 2,
  and the RNG ends where pass 1 left it;
- BatchNorm's running statistics are updated once per step, by the first chunk (DataParallel keeps replica 0's
  buffers): pass 1 leaves them untouched, and after pass 2 they are those after chunk 0;
- under several processes the cached gradients are applied without synchronising until the last chunk
  (`no_sync`), so DDP averages the gradients once; gradient checkpointing recomputes inside each chunk as usual.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from torch import nn

from ..data.views import view_major
from ..losses import LossOutput, MethodLoss


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def _running_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": buffer.detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for key, buffer in module.named_buffers(recurse=False)
        if buffer is not None
    }


@torch.no_grad()
def _restore_running_statistics(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for key, buffer in module.named_buffers(recurse=False):
                if buffer is not None:
                    buffer.copy_(saved[f"{name}.{key}"])


def chunked_training_step(
    model: nn.Module,
    loss_fn: MethodLoss,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    chunk_rows: int,
    *,
    accelerator: Accelerator,
    memory_format: torch.memory_format,
    accumulation_steps: int,
) -> LossOutput:
    """One training step on a (B, V, 3, H, W) batch in chunks of `chunk_rows` view-major rows; the backward pass
    is done here (through `accelerator.backward`). Returns the batch's `LossOutput`, its loss detached and divided
    by the gradient-accumulation steps, as the Trainer's own step returns it."""
    if loss_fn.own_forward:
        raise ValueError(
            f"contrast_chunk_size: {type(loss_fn).__name__} runs its own forward (a momentum encoder); it cannot "
            "be chunked. Leave contrast_chunk_size unset for this method."
        )
    unwrapped = accelerator.unwrap_model(model)
    rows = view_major(pixel_values, memory_format)
    chunks = rows.split(chunk_rows)
    device = rows.device

    # 1. every chunk without gradient; BatchNorm's running statistics are put back afterwards
    statistics = _running_statistics(unwrapped)
    states, features, logits = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_rng_state(device))
            output = model(pixel_values=chunk)
            features.append(output.features)
            logits.append(output.logits)
    end_state = _rng_state(device)
    _restore_running_statistics(unwrapped, statistics)

    # 2. the whole batch's loss and its gradient with respect to the features and logits
    all_features = torch.cat(features).detach().requires_grad_(True)
    all_logits = torch.cat(logits).detach().requires_grad_(True)
    loss_output = loss_fn.from_outputs(SimpleNamespace(features=all_features, logits=all_logits), labels)
    loss = loss_output.loss / accumulation_steps
    # None where the loss does not read it (CE reads no features): that part of the model then gets no gradient
    # at all, as in an ordinary step, rather than a zero one (SGD would still apply weight decay to a zero).
    grad_features, grad_logits = torch.autograd.grad(loss, [all_features, all_logits], allow_unused=True)

    # 3. every chunk again, with gradient, back-propagating its part of the cached gradient
    start = 0
    after_first: dict[str, torch.Tensor] | None = None
    for index, chunk in enumerate(chunks):
        _set_rng_state(states[index], device)
        stop = start + chunk.shape[0]
        last = index == len(chunks) - 1
        context = accelerator.no_sync(model) if not last else contextlib.nullcontext()
        with context:
            output = model(pixel_values=chunk)
            surrogate = sum(
                (value * grad[start:stop]).sum()
                for value, grad in ((output.features, grad_features), (output.logits, grad_logits))
                if grad is not None
            )
            accelerator.backward(surrogate)
        if index == 0:
            after_first = _running_statistics(unwrapped)
        start = stop
    _restore_running_statistics(unwrapped, after_first)
    _set_rng_state(end_state, device)
    return replace(loss_output, loss=loss.detach())
