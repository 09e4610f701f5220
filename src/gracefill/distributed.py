"""One SVGD ensemble over several processes (torch.distributed): particles sharded over the ranks.

Every rank holds S / world particles as its ensemble module and sees the same mini-batches
(particles are sharded, not data). The likelihood, the priors and Adam are per particle and need
no communication; the SVGD kernel and its repulsive term need every particle, so each step
gathers the flattened particles theta (S, P) and their gradients G (S, P) from all ranks
(one all-gather each, no host synchronisation), computes the direction of all S particles
exactly as one process does (same median heuristic over the full S x S distances) and keeps its
own rows. theta and G are gathered in the parameters' dtype (fp32): bf16 autocasts only the
forward, and the kernel's distances are differences of nearly equal numbers.

Initialisation, checkpoints and outputs are those of the single process: every rank draws the
full S-particle initialisation from the seed on the CPU and keeps its slice; a checkpoint holds
the full S-particle engine state (written by rank 0), so a run resumes on any number of
processes that divides S, one included; predictions are gathered in particle order.

Launch with ``torchrun --standalone --nproc-per-node N -m gracefill.cli train ...`` (the train
rule does so when ``training.devices`` is N > 1): NCCL on CUDA (``cuda:<local rank>``), gloo on
the CPU.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import xarray as xr
from torch import Tensor

from gracefill.io import UserError
from gracefill.nn import build_backbone
from gracefill.svgd import SVGD

log = logging.getLogger("gracefill")

__all__ = ["Ranks", "ShardedSVGD", "build_sharded_engine", "check_shards", "launched", "process_group", "start",
           "stop", "train_sharded"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: rank, world size, local rank and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def writer(self) -> bool:
        """Rank 0 writes checkpoints, models, logs and reconstructions."""
        return self.rank == 0

    def rows(self, particles: int) -> slice:
        """This rank's particles among ``particles`` (contiguous, in rank order)."""
        check_shards(particles, self.world)
        n = particles // self.world
        return slice(self.rank * n, (self.rank + 1) * n)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()


def check_shards(particles: int, world: int) -> None:
    """Every rank holds the same number of particles."""
    if world < 1 or particles % world:
        raise UserError(f"config key 'training.devices': {world} does not divide model.particles ({particles}); "
                        "use a divisor of the number of particles")


def launched() -> bool:
    """Whether this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device_name: str) -> Ranks:
    """Join the process group torchrun describes (environment variables) and pick the device:
    CUDA (``training.device`` auto with CUDA, or cuda) gives ``cuda:<local rank>`` and NCCL, the
    CPU gloo. Only rank 0 logs below warnings."""
    from gracefill.train import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"config key 'training.devices': {world} processes on this node but only "
                            f"{torch.cuda.device_count()} CUDA devices are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    if rank != 0:
        log.setLevel(logging.WARNING)
    return Ranks(rank=rank, world=world, local_rank=local_rank, device=device)


def stop() -> None:
    """Leave the process group (a no-op outside one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device_name: str) -> Iterator[Ranks | None]:
    """This process's :class:`Ranks` while inside, when torchrun started several (else None);
    the group is left on the way out, also after an error."""
    ranks = start(device_name) if launched() else None
    try:
        yield ranks
    finally:
        stop()


def gather(t: Tensor, world: int) -> Tensor:
    """Concatenate every rank's ``t`` (same shape on all) along the first axis, in rank order."""
    t = t.detach().contiguous()
    out = t.new_empty((t.shape[0] * world, *t.shape[1:]))
    _all_gather_single(out, t)
    return out


# the same collective under its newer name where torch has it (all_gather_into_tensor is deprecated there)
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class ShardedSVGD(SVGD):
    """An :class:`SVGD` engine holding this rank's particles, whose step, prediction and state
    cover all S particles of the group.

    Made with :meth:`adopt` from an engine built for S / world particles (so that it takes every
    option of ``gracefill.train.build_engine``). :meth:`step` equals the single-process step of
    the S particles, restricted to this rank's rows; ``stats["sse_mean"]`` is the squared error of
    the mean over all S particles (``sse`` and ``log_joint`` stay per local particle);
    :meth:`predict` returns all S particles' outputs on every rank; :meth:`state_dict` and
    :meth:`load_state_dict` use the single-process format with S particles. Every rank must call
    these together (they are collectives).
    """

    ranks: Ranks
    total_particles: int
    rows: slice

    @classmethod
    def adopt(cls, engine: SVGD, ranks: Ranks) -> "ShardedSVGD":
        engine.__class__ = cls
        engine.ranks = ranks
        engine.total_particles = engine.num_particles * ranks.world
        engine.rows = ranks.rows(engine.total_particles)
        return engine

    def gather(self, t: Tensor) -> Tensor:
        """All ranks' ``t`` (leading axis: local particles) concatenated: the group's particles."""
        return gather(t, self.ranks.world)

    def _all(self, t: Tensor) -> Tensor:
        return self.gather(t)

    def _own(self, t: Tensor) -> Tensor:
        return t[self.rows]

    def direction(self, theta: Tensor, grads: Tensor) -> Tensor:
        """This rank's rows of the SVGD direction of all S particles (gathered theta and G)."""
        return super().direction(self.gather(theta), self.gather(grads))[self.rows]

    def kernel(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """RBF kernel (S, S) and bandwidth of all particles, from this rank's theta (S / world, P)."""
        return super().kernel(self.gather(theta))

    def log_joint_grads(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        grads, stats = super().log_joint_grads(x, y, mask)
        total = stats["output_mean"] * self.num_particles
        dist.all_reduce(total)
        mean = total / self.total_particles
        y = y.to(mean.dtype)
        mask = (torch.broadcast_to(mask.to(device=y.device, dtype=torch.bool), y.shape)
                if self.land_only and mask is not None else None)
        if mask is not None:
            y = y.masked_fill(~mask, 0.0)
        r2 = (mean - y).square()
        if mask is not None:
            r2 = r2.masked_fill(~mask, 0.0)
        stats["output_mean"] = mean
        stats["sse_mean"] = r2.sum()
        return grads, stats

    def predict(self, x: Tensor) -> Tensor:
        """Outputs (S, B, ...) of all S particles, on every rank."""
        return self.gather(super().predict(x))

    def all_log_beta(self) -> Tensor:
        """log beta (S,) of all particles (detached)."""
        return self.gather(self.log_beta.detach())

    def diagnose(self, theta: Tensor, grads: Tensor) -> dict[str, Tensor]:
        """Kernel diagnostics of all S particles (gathered theta and G)."""
        return super().diagnose(self.gather(theta), self.gather(grads))

    def predictive_moments(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from gracefill.svgd import predictive_moments

        return predictive_moments(self.predict(x), self.all_log_beta())

    def _optimizer_params(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """The state of all S particles in the single-process format (on every rank)."""
        params = self._optimizer_params()
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = {
            i: {name: (self.gather(value) if torch.is_tensor(value) and value.shape == params[i].shape else value)
                for name, value in entry.items()}
            for i, entry in optimizer["state"].items()
        }
        return {
            "ensemble": {name: self.gather(value) for name, value in self.ensemble.state_dict().items()},
            "log_beta": self.all_log_beta(),
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load this rank's particles from a state of all S particles (any number of ranks wrote it)."""
        s, rows = self.total_particles, self.rows

        def mine(name: str, value: Tensor) -> Tensor:
            if value.dim() == 0 or value.shape[0] != s:
                raise UserError(f"the checkpoint's {name} has shape {tuple(value.shape)}: expected {s} particles")
            return value[rows]

        params = self._optimizer_params()
        optimizer = dict(state["optimizer"])
        optimizer["state"] = {
            i: {name: (mine(name, value) if torch.is_tensor(value) and value.dim() == params[int(i)].dim()
                       and value.dim() > 0 else value)
                for name, value in entry.items()}
            for i, entry in state["optimizer"]["state"].items()
        }
        super().load_state_dict({
            "ensemble": {name: mine(name, value) for name, value in state["ensemble"].items()},
            "log_beta": mine("log_beta", state["log_beta"]),
            "optimizer": optimizer,
            "scheduler": state["scheduler"],
        })


def build_sharded_engine(settings: dict, cfg: dict, num_train: int, ranks: Ranks, *,
                         log_beta_init: Tensor | None = None, same_init: bool = True,
                         compile_network: bool | str = False) -> ShardedSVGD:
    """This rank's engine of the S = ``settings["particles"]`` particles.

    ``same_init``: its particles (weights, buffers and log beta) are this rank's rows of what
    ``gracefill.train.build_engine`` draws for all S particles from the global torch RNG (which
    is left where that call leaves it), so that the group starts where one process does.
    Without it the initialisation is arbitrary (a checkpoint is loaded next).
    """
    from gracefill.train import build_engine

    s = int(settings["particles"])
    rows = ranks.rows(s)
    local = {**settings, "particles": s // ranks.world}
    full_state = None
    if same_init:
        # the same draws in the same order as build_engine: the backbone on the CPU, then (when
        # no start is given) log beta from the noise prior inside SVGD.__init__
        full = build_backbone(settings["backbone"], settings["in_channels"], settings["out_channels"], s,
                              features=settings["features"], activation=settings["activation"])
        full_state = {name: value[rows] for name, value in full.state_dict().items()}
        if log_beta_init is None:
            noise = cfg["training"]["noise_prior"]
            gamma = torch.distributions.Gamma(torch.tensor(float(noise["shape"]), dtype=torch.float64),
                                              torch.tensor(float(noise["rate"]), dtype=torch.float64))
            log_beta_init = gamma.sample((s,)).log()
    with torch.random.fork_rng(devices=[]):
        engine = build_engine(local, cfg, num_train, ranks.device,
                              log_beta_init=None if log_beta_init is None else log_beta_init[rows],
                              compile_network=compile_network)
    if full_state is not None:
        engine.ensemble.load_state_dict(full_state)
    return ShardedSVGD.adopt(engine, ranks)


def train_sharded(ds: xr.Dataset, cfg: dict, ranks: Ranks, **kwargs) -> tuple[dict, list[dict]]:
    """``gracefill.train.train`` with the particles sharded over the ranks (same batches, scores,
    log rows and checkpoints, to float rounding). Rank 0 writes the checkpoints and the log;
    every rank returns the payload and the log rows."""
    from gracefill import train as tr

    def engine(settings, cfg, num_train, device, **options):
        return build_sharded_engine(settings, cfg, num_train, ranks, **options)

    return tr.train(ds, cfg, device=ranks.device, engine_builder=engine, writer=ranks.writer,
                    barrier=ranks.barrier, **kwargs)
