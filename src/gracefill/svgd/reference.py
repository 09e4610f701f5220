"""Plain per-particle SVGD: the obviously-correct reference for the vectorised engine.

Each particle is its own S = 1 module (``ensemble.extract_particle(i)``) with its own
log beta and its own Adam; log joints and gradients are computed one particle at a
time, and the kernel and the update direction with explicit Python loops over i and j.
Slow by design (small S only); kept in the package for tests and benchmarks. Same
mathematics and ``step`` signature as :class:`gracefill.svgd.SVGD`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["ReferenceSVGD"]


class ReferenceSVGD:
    """Per-particle loop SVGD (see the module docstring).

    ``ensemble`` is copied particle by particle; ``log_beta_init`` (S,) gives the initial
    log beta of every particle (None: drawn from the noise prior). The other arguments
    mean what they mean in :class:`gracefill.svgd.SVGD`; ``weight_prior(w)`` is called on
    each single-particle parameter (leading axis 1) and must return shape (1,) (None:
    Student-t a=1, b=0.05, written out here).
    """

    def __init__(
        self,
        ensemble: nn.Module,
        num_train: int,
        *,
        lr: float = 2.5e-3,
        lr_noise: float = 1e-2,
        weight_prior: Callable[[Tensor], Tensor] | None = None,
        noise_prior: str = "correct",
        noise_shape: float = 2.0,
        noise_rate: float = 1e-6,
        land_only: bool = True,
        learn_noise: bool = True,
        log_beta_init: Tensor | float | None = None,
    ) -> None:
        if noise_prior not in ("correct", "published"):
            raise ValueError(f"unknown noise_prior {noise_prior!r}")
        self.num_particles = int(ensemble.num_particles)
        self.num_train = int(num_train)
        self.weight_prior = weight_prior
        self.noise_prior = noise_prior
        self.noise_shape = float(noise_shape)
        self.noise_rate = float(noise_rate)
        self.land_only = bool(land_only)
        self.learn_noise = bool(learn_noise)

        s = self.num_particles
        self.particles = [ensemble.extract_particle(i) for i in range(s)]
        ref = next(iter(ensemble.parameters()))
        if log_beta_init is None:
            init = torch.distributions.Gamma(self.noise_shape, self.noise_rate).sample((s,)).log()
        else:
            init = torch.as_tensor(log_beta_init, dtype=torch.float64).expand(s)
        init = init.to(device=ref.device, dtype=ref.dtype)
        self.log_betas = [nn.Parameter(init[i:i + 1].clone(), requires_grad=self.learn_noise) for i in range(s)]

        self.optimizers = []
        for module, lb in zip(self.particles, self.log_betas):
            groups = [{"params": [p for p in module.parameters() if p.requires_grad], "lr": lr}]
            if self.learn_noise:
                groups.append({"params": [lb], "lr": lr_noise})
            self.optimizers.append(torch.optim.Adam(groups, lr=lr, foreach=False))

    # ----------------------------------------------------------------- per particle
    def _variables(self, i: int) -> list[Tensor]:
        params = [p for p in self.particles[i].parameters() if p.requires_grad]
        return params + ([self.log_betas[i]] if self.learn_noise else [])

    def _weight_log_prior(self, w: Tensor) -> Tensor:
        if self.weight_prior is not None:
            return self.weight_prior(w).sum()
        a, b = 1.0, 0.05
        return -(a + 0.5) * torch.log(1.0 + w ** 2 / (2.0 * b)).sum()

    def _noise_log_prior(self, log_beta: Tensor) -> Tensor:
        a = self.noise_shape if self.noise_prior == "correct" else self.noise_shape - 1.0
        return (a * log_beta - self.noise_rate * torch.exp(log_beta)).sum()

    def theta(self) -> Tensor:
        """Flattened particles (S, P), one row per particle, log beta last."""
        return torch.stack([torch.cat([v.detach().reshape(-1) for v in self._variables(i)])
                            for i in range(self.num_particles)])

    def log_joint_grads(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-particle log joints and their gradients, one particle at a time.

        Returns G (S, P) and the same statistics as the engine.
        """
        dtype = self.log_betas[0].dtype
        y = y.to(dtype)
        use_mask = self.land_only and mask is not None
        if use_mask:
            valid = torch.broadcast_to(mask.to(torch.bool), y.shape)
            y = torch.where(valid, y, torch.zeros_like(y))
            n_y = valid.sum().to(dtype)
        else:
            valid = torch.ones_like(y, dtype=torch.bool)
            n_y = torch.tensor(float(y.numel()), dtype=dtype, device=y.device)
        batch = x.shape[0]

        grads, sses, joints, outputs = [], [], [], []
        for i in range(self.num_particles):
            module, lb = self.particles[i], self.log_betas[i]
            module.train()
            out = module(x)[0].to(dtype)  # (B, ...)
            sse = torch.where(valid, (y - out) ** 2, torch.zeros_like(y)).sum()
            beta = torch.exp(lb[0])
            loglik = self.num_train / batch * (-beta / 2 * sse + n_y / 2 * lb[0])
            logprior = self._noise_log_prior(lb)
            for p in module.parameters():
                if p.requires_grad:
                    logprior = logprior + self._weight_log_prior(p)
            joint = loglik + logprior
            variables = self._variables(i)
            g = torch.autograd.grad(joint, variables)
            grads.append(torch.cat([gi.reshape(-1) for gi in g]))
            sses.append(sse.detach())
            joints.append(joint.detach())
            outputs.append(out.detach())
        out_mean = torch.stack(outputs).mean(0)
        sse_mean = torch.where(valid, (out_mean - y) ** 2, torch.zeros_like(y)).sum()
        stats = {"sse": torch.stack(sses), "n_y": n_y, "log_joint": torch.stack(joints),
                 "output_mean": out_mean, "sse_mean": sse_mean}
        return torch.stack(grads), stats

    # ----------------------------------------------------------------- kernel, loops
    def kernel(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """K_ij = exp(-||theta_i - theta_j||^2 / h), h = lower median of all S^2 squared
        distances / log S, by explicit loops."""
        s = theta.shape[0]
        d2 = [[((theta[i] - theta[j]) ** 2).sum() for j in range(s)] for i in range(s)]
        values = sorted(d2[i][j] for i in range(s) for j in range(s))
        median = values[(len(values) - 1) // 2]
        h = median / math.log(s) if s > 1 else torch.ones((), dtype=theta.dtype, device=theta.device)
        if not h > 0:
            h = torch.ones((), dtype=theta.dtype, device=theta.device)
        k = torch.stack([torch.stack([torch.exp(-d2[i][j] / h) for j in range(s)]) for i in range(s)])
        return k, h

    def direction(self, theta: Tensor, grads: Tensor) -> Tensor:
        """phi_i = 1/S sum_j [K_ij g_j + (2/h) K_ij (theta_i - theta_j)] by explicit loops."""
        s = theta.shape[0]
        k, h = self.kernel(theta)
        phi = []
        for i in range(s):
            acc = torch.zeros_like(theta[i])
            for j in range(s):
                acc = acc + k[i, j] * grads[j] + 2.0 / h * k[i, j] * (theta[i] - theta[j])
            phi.append(acc / s)
        return torch.stack(phi)

    # ----------------------------------------------------------------- training
    def step(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """One SVGD update: per-particle gradients, loop kernel, -phi into .grad, one Adam
        step per particle."""
        grads, stats = self.log_joint_grads(x, y, mask)
        phi = self.direction(self.theta(), grads)
        for i in range(self.num_particles):
            offset = 0
            for v in self._variables(i):
                n = v.numel()
                v.grad = -phi[i, offset:offset + n].reshape(v.shape).clone()
                offset += n
            self.optimizers[i].step()
        return stats

    def predict(self, x: Tensor) -> Tensor:
        """Outputs (S, B, ...) in eval mode, one particle at a time."""
        outs = []
        with torch.no_grad():
            for module in self.particles:
                was = module.training
                module.eval()
                outs.append(module(x)[0])
                module.train(was)
        return torch.stack(outs)

    @property
    def log_beta(self) -> Tensor:
        return torch.cat([lb.detach() for lb in self.log_betas])
