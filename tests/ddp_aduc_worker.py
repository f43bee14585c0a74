"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2`: AduC on the global batch.

Each rank holds half of the images (its own view-major rows); the loss averaged over ranks and the gradients
must equal those of one process computing AduC on the whole batch. Writes `ok` to argv[1] on rank 0.
"""

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from aduni_hf.losses import AduCLoss

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
generator = torch.Generator().manual_seed(0)
num_images, dim, num_classes = 8, 6, 3
labels = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1])
raw = torch.randn(2 * num_images, dim, generator=generator, dtype=torch.float64)  # view-major global batch
logits = torch.randn(2 * num_images, num_classes, generator=generator, dtype=torch.float64)
loss_fn = AduCLoss(num_classes, class_counts=[50, 30, 5])

# One process, the whole batch (every rank computes it, without gathering).
single = AduCLoss(num_classes, class_counts=[50, 30, 5], gather_distributed=False)
raw_ref, logits_ref = raw.clone().requires_grad_(), logits.clone().requires_grad_()
reference = single(F.normalize(raw_ref, dim=1), logits_ref, labels, alpha=0.3)
reference.backward()

# This rank: images [rank * n, (rank + 1) * n), its rows view-major.
n = num_images // world
images = torch.arange(rank * n, (rank + 1) * n)
rows = torch.cat([images, images + num_images])
raw_local, logits_local = raw[rows].clone().requires_grad_(), logits[rows].clone().requires_grad_()
local = loss_fn(F.normalize(raw_local, dim=1), logits_local, labels[images], alpha=0.3)
local.backward()

mean_loss = local.detach().clone()
dist.all_reduce(mean_loss)
mean_loss /= world
torch.testing.assert_close(mean_loss, reference.detach())
# The all-gather's backward sums every rank's anchors' gradients: world x the gradient of the global mean.
torch.testing.assert_close(raw_local.grad, world * raw_ref.grad[rows])
torch.testing.assert_close(logits_local.grad, world * logits_ref.grad[rows])
assert not torch.allclose(local.detach(), reference.detach())  # each rank's own loss differs: a real check
per_process = single(F.normalize(raw[rows], dim=1), logits[rows], labels[images], alpha=0.3)
dist.all_reduce(per_process)
assert not torch.allclose(per_process / world, reference.detach())  # without the gather it would differ
dist.barrier()
if rank == 0:
    with open(sys.argv[1], "w") as handle:
        handle.write("ok")
dist.destroy_process_group()
