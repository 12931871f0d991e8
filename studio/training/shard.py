"""Data-parallel ranks for the one Trainer: which rows a rank trains on and how its loss is weighted.

Pure torch.distributed (no Ray): the Ray backend creates the process group, this module does the
rest. Every rank draws the same global batch (the user's batch size, same seeded order) and keeps
rows `rank::world_size` of it. Rank r's loss is its micro-batch mean times `world_size * share_r`
(share_r = its fraction of the batch's targets), so DistributedDataParallel's averaged gradient is
exactly the full batch's, also for an uneven last batch, and the all-reduced logged loss is the
full batch's loss. The same all-reduce carries a stop flag, so every rank stops at the same step.

    >>> x, y = torch.arange(10).view(5, 2), torch.arange(5)
    >>> shard = Shard(rank=1, world_size=2)
    >>> xs, ys = shard.take(x, y)
    >>> ys.tolist(), shard.share
    ([1, 3], 0.4)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from studio.training.loop import Callback, Trainer


class Shard:
    """One rank's view of the global batch; attach() wires it into a Trainer."""

    def __init__(self, rank: int, world_size: int, device: torch.device | str = "cpu"):
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.share = 1.0           # this step's fraction of the global batch's targets
        self.stop_agreed = False   # some rank asked to stop (seen by every rank at the same step)
        self._stop_local = False
        self.ddp: nn.Module | None = None

    # ---- the model ------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, log=None) -> nn.Module:
        """BatchNorm -> synchronized BatchNorm when world_size > 1; wraps a DDP for the training step.

        Returns the model itself (its state dict keys unchanged: checkpoints load into a plain model).
        """
        if self.world_size > 1:
            converted = convert_sync_batchnorm(model, self.device)
            if converted and log is not None:
                log(f"BatchNorm layers {', '.join(converted)} became SyncBatchNorm: batch statistics are "
                    f"computed over the whole global batch across the {self.world_size} workers")
            model.to(self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def attach(self, trainer: Trainer) -> None:
        trainer.shard = self
        if self.ddp is not None:
            trainer.step_model = self.ddp

    # ---- one step -------------------------------------------------------------------------------
    def take(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows rank::world_size of the global batch; sets `share`. A rank left without rows (a batch
        smaller than the number of workers) trains on row 0 with share 0: DDP still needs its backward."""
        total = y.numel()
        xs, ys = x[self.rank::self.world_size], y[self.rank::self.world_size]
        if ys.shape[0] == 0:
            self.share = 0.0
            return x[:1], y[:1]
        self.share = ys.numel() / total
        return xs, ys

    def weigh(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate: DDP averages over ranks, so scale by world_size * share."""
        return loss * (self.world_size * self.share)

    def logged_loss(self, weighted: torch.Tensor) -> float:
        """The full batch's loss (identical on every rank); also agrees on the stop flag."""
        if self.world_size == 1:
            self.stop_agreed = self._stop_local
            return weighted.item()
        packed = torch.stack([weighted.detach().float() / self.world_size,
                              torch.tensor(float(self._stop_local), device=weighted.device)])
        dist.all_reduce(packed)
        self.stop_agreed = bool(packed[1].item() > 0)
        return packed[0].item()

    def request_stop(self) -> None:
        """Ask every rank to stop; they all see it at the next step's all-reduce."""
        self._stop_local = True


class ShardStop(Callback):
    """Ends every rank as `stopped` at the same step once any rank has asked (Shard.request_stop)."""

    def __init__(self, shard: Shard):
        self.shard = shard

    def on_step_end(self, trainer: Trainer) -> None:
        if self.shard.stop_agreed and trainer.state.stop_reason is None:
            trainer.state.stop_reason = "stopped"
            trainer.state.message = f"stopped on request at step {trainer.state.step}"


# ---- synchronized BatchNorm -----------------------------------------------------------------------

class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover every rank's rows (torch's SyncBatchNorm is GPU only).

    Sums and squared sums are all-reduced with torch.distributed.nn (differentiable), so the gradient
    also flows through the global mean and variance, as in one process with the whole batch.
    Same parameters and buffers as nn.BatchNorm*d: state dicts load either way.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims),
                           torch.tensor([x.numel() / c], device=x.device, dtype=torch.float32)])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0.0)  # biased, as batch norm normalizes
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(self.running_mean.dtype) * momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach().to(self.running_var.dtype) * momentum)
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> list[str]:
    """Replace every BatchNorm*d in place (nn.SyncBatchNorm on CUDA, CPUSyncBatchNorm otherwise),
    keeping names, parameters and buffers. Returns the names of the replaced modules."""
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm) or isinstance(
                    child, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
                continue
            cls = nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(parent, name, new)
            replaced.append(f"{parent_name}.{name}" if parent_name else name)
    return replaced
