"""Stein variational gradient descent (SVGD) over an ensemble module.

The engine is generic: it knows no GRACE and no particular network. It works on an
*ensemble module*, one ``nn.Module`` that holds S particles (network replicas):

- every ``nn.Parameter`` (and every per-particle buffer, e.g. BatchNorm running
  statistics) has a leading particle axis of size S; attribute ``num_particles`` = S;
- ``forward(x, particles=None)`` maps a batch x of shape (B, ...), shared by all
  particles, to outputs (S, B, ...); ``particles=slice(a, b)`` evaluates only those
  particles from parameter slices (gradients flow into the full parameters);
- ``extract_particle(i)`` returns an S = 1 ensemble module holding a copy of particle i.

Particle i is theta_i = (w_i, log beta_i); the engine owns log beta, a parameter of
shape (S,). The model is described in the project's design notes (model.md); the
formulas used are repeated in the docstrings below.

Beside the engine: ``reference`` (the same mathematics as a plain loop over particles, which
the tests check the engine against) and ``functional`` (:class:`FunctionalEnsemble`, any plain
module as an ensemble module through torch.func, for small problems).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from .functional import FunctionalEnsemble

__all__ = [
    "FunctionalEnsemble",
    "GaussianPrior",
    "SVGD",
    "StudentTPrior",
    "function_space_direction",
    "kernel_diagnostics",
    "predictive_moments",
    "rbf_kernel",
    "svgd_direction",
]

_NOISE_PRIORS = ("correct", "published")
#: rbf: the RBF kernel on every parameter (the paper); last_layer: on the output layer's
#: parameters only; function: on the particles' outputs (function space); none: no kernel
_KERNELS = ("rbf", "last_layer", "function", "none")
#: network: one graph of the whole forward per chunk size; blocks: each of the ensemble's
#: compile_regions() compiled on its own (regional compilation)
_COMPILE_SCOPES = ("network", "blocks")
#: compiled variants one region's code may hold under compile_scope "blocks": the regions of a
#: class share one code object, and each input shape (three U-net levels), train/eval mode and
#: particle count adds one; dynamo's default limit (8) would silently run the rest eagerly
_BLOCK_RECOMPILES = 64


def _allow_recompiles(limit: int) -> None:
    """Raise dynamo's per-code recompilation limit to at least ``limit`` (named
    ``recompile_limit`` from torch 2.6, ``cache_size_limit`` before)."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(int(getattr(config, name)), limit))


# --------------------------------------------------------------------------- priors
class StudentTPrior:
    """Student-t weight prior: the Normal(0, 1/alpha) prior with alpha ~ Gamma(a, rate b)
    marginalised, log p(w) = -(a + 1/2) * sum log(1 + w^2 / (2b)) (constants dropped).

    Called on a stacked parameter (S, ...) it returns the per-particle log density (S,):
    ``prior(w)`` takes ``w`` (Tensor, (S, ...), one parameter of every particle, particle axis
    first) and returns a Tensor (S,), the log density of each particle's entries summed.

    Parameters
    ----------
    a : float, default 1.0
        Shape of the Gamma prior on the weight precision alpha.
    b : float, default 0.05
        Rate of that Gamma prior.
    """

    def __init__(self, a: float = 1.0, b: float = 0.05) -> None:
        self.a = float(a)
        self.b = float(b)

    def __call__(self, w: Tensor) -> Tensor:
        return -(self.a + 0.5) * torch.log1p(w.square() / (2.0 * self.b)).reshape(w.shape[0], -1).sum(1)

    def __repr__(self) -> str:
        return f"StudentTPrior(a={self.a}, b={self.b})"


class GaussianPrior:
    """Gaussian weight prior Normal(0, 1/precision): log p(w) = -precision/2 * sum w^2.

    Same calling convention as :class:`StudentTPrior` ((S, ...) -> (S,)): ``prior(w)`` returns
    the log density (constants dropped) of each particle's entries summed. Used for conjugate
    tests with a known posterior.

    Parameters
    ----------
    precision : float, default 1.0
        Precision of the Normal prior on every weight.
    """

    def __init__(self, precision: float = 1.0) -> None:
        self.precision = float(precision)

    def __call__(self, w: Tensor) -> Tensor:
        return -0.5 * self.precision * w.square().reshape(w.shape[0], -1).sum(1)

    def __repr__(self) -> str:
        return f"GaussianPrior(precision={self.precision})"


# --------------------------------------------------------------------------- kernel
@contextlib.contextmanager
def _ieee_fp32_matmul() -> Iterator[None]:
    """Run float32 matmuls at full precision inside (no TF32 / bf16 passes).

    The squared distances and the repulsive term are differences of large, nearly equal
    numbers; a caller who enabled TF32 globally for the convolutions must not silently
    degrade them. The global setting is restored afterwards.
    """
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _kernel_centred(xc: Tensor) -> tuple[Tensor, Tensor]:
    """RBF kernel and bandwidth from column-centred particles xc (S, P)."""
    s = xc.shape[0]
    gram = xc @ xc.T
    sq = gram.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0)
    d2 = 0.5 * (d2 + d2.T)  # exact symmetry
    d2.fill_diagonal_(0.0)
    if s > 1:
        # torch.median over all S^2 entries (zero diagonal included) is the lower median,
        # as in the published code.
        h = torch.median(d2) / math.log(s)
    else:
        h = d2.new_ones(())
    # Degenerate bandwidth (median 0: S = 2, or coincident particles): the published code
    # would divide by zero; fall back to h = 1 (K is then 1 between coincident particles).
    h = torch.where(h > 0, h, torch.ones_like(h))
    k = torch.exp(-d2 / h)
    return k, h


def rbf_kernel(theta: Tensor) -> tuple[Tensor, Tensor]:
    """RBF kernel on flattened particles.

    K_ij = exp(-||theta_i - theta_j||^2 / h) with the bandwidth h = median(squared distances) /
    log S (median heuristic, lower median over all S^2 entries including the zero diagonal,
    i.e. ``torch.median``). The squared distances use the centred Gram form
    ||xi||^2 + ||xj||^2 - 2 xi.xj on column-centred particles (translation invariant, small
    cancellation error); float32 matmuls run at full precision (no TF32).

    Parameters
    ----------
    theta : Tensor
        Flattened particles, shape (S, P).

    Returns
    -------
    K : Tensor
        Kernel matrix, shape (S, S), symmetric with unit diagonal, dimensionless.
    h : Tensor
        Bandwidth, 0-d, in the units of theta squared; 1 when S = 1 or the median is 0 (S = 2,
        coincident particles).
    """
    with _ieee_fp32_matmul():
        return _kernel_centred(theta - theta.mean(0, keepdim=True))


def svgd_direction(theta: Tensor, grads: Tensor, columns: Tensor | None = None) -> Tensor:
    """SVGD update direction (ascent) for every particle.

    phi_i = 1/S sum_j [ K_ij grad log p(theta_j) + grad_{theta_j} K(theta_j, theta_i) ]
    with grad_{theta_j} K(theta_j, theta_i) = (2/h) K_ij (theta_i - theta_j), so
    phi = ( K G + (2/h) (diag(K 1) - K) Theta ) / S.

    Sign convention checked against the published code (Zhu & Zabaras, cics-nd/
    cnn-surrogate ``models/svgd.py``): ``dxKxx = (Kxx.sum(1).diag() - Kxx).matmul(X) /
    l_square`` with ``l_square = h / 2``, and ``grad_theta = -(Kxx @ G + dxKxx) / S`` is
    written into ``.grad`` for Adam; the second term is repulsive (it pushes theta_i
    away from nearby theta_j). Theta is centred first, which leaves (diag(K1) - K) Theta
    unchanged since the rows of diag(K1) - K sum to zero, but reduces cancellation.

    Parameters
    ----------
    theta : Tensor
        Flattened particles, shape (S, P).
    grads : Tensor
        Gradients G of every particle's log joint with respect to theta, shape (S, P).
    columns : Tensor or None, default None
        1-D index of theta's columns (None = all) that restricts the kernel to those coordinates
        (e.g. the output layer's): K and h are computed from them, K G still mixes the full
        gradients, and the repulsive term acts on those coordinates only (the kernel's gradient
        is zero along the others).

    Returns
    -------
    Tensor
        phi, the ascent direction, shape (S, P).
    """
    return _direction_and_kernel(theta, grads, columns)[0]


def _direction_and_kernel(theta: Tensor, grads: Tensor, columns: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`svgd_direction` with the kernel K and bandwidth h it was computed with (one kernel for
    the callers that also report it)."""
    s = theta.shape[0]
    with _ieee_fp32_matmul():
        xc = theta - theta.mean(0, keepdim=True)
        xk = xc if columns is None else xc[:, columns]
        k, h = _kernel_centred(xk)
        kbar = torch.diag_embed(k.sum(1)) - k
        phi = torch.mm(k / s, grads)
        if columns is None:
            phi.addmm_(kbar * (2.0 / (h * s)), xc)
        else:
            phi[:, columns] += torch.mm(kbar * (2.0 / (h * s)), xk)
    return phi, k, h


def function_space_direction(outputs: Tensor, output_grads: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The SVGD direction in function space (Wang et al. 2019, ICLR: function space particle
    optimization): :func:`svgd_direction` applied to the particles' outputs on the mini-batch.

    ``phi_i = 1/S sum_j [K_ij dlogL_j/df_j + (2/h) K_ij (f_i - f_j)]``, with the RBF kernel K and
    bandwidth h of the outputs (median heuristic). The engine pulls phi back to the weights
    through each particle's Jacobian (one backward pass).

    Parameters
    ----------
    outputs : Tensor
        Every particle's outputs f_i on the mini-batch, flattened, shape (S, D), in the target's
        units.
    output_grads : Tensor
        Gradient of each particle's log likelihood with respect to its outputs, shape (S, D), in
        1/(target units).

    Returns
    -------
    phi : Tensor
        Direction in which each particle's outputs should move, shape (S, D).
    K : Tensor
        RBF kernel of the outputs, shape (S, S), dimensionless.
    h : Tensor
        Its bandwidth, 0-d, in (target units)^2.
    """
    return _direction_and_kernel(outputs, output_grads)


def kernel_diagnostics(theta: Tensor, grads: Tensor, columns: Tensor | None = None) -> dict[str, Tensor]:
    """How much the kernel couples the particles (0-d tensors, no host synchronisation).

    Parameters
    ----------
    theta : Tensor
        Flattened particles, shape (S, P).
    grads : Tensor
        Gradients G of every particle's log joint, shape (S, P).
    columns : Tensor or None, default None
        The kernel's coordinates, as in :func:`svgd_direction`.

    Returns
    -------
    dict of str to Tensor
        0-d tensors: ``kernel_offdiag`` the mean off-diagonal K_ij (1/S-ish means every pair is
        far apart; 0 for S = 1), dimensionless; ``repulsion_ratio`` ||repulsive term|| / ||driving
        term K G|| of :func:`svgd_direction` (near 0: the particles move as independent gradient
        ascents), dimensionless; ``bandwidth`` h of the kernel's coordinates, in the units of theta
        squared; ``particle_distance`` the root mean squared distance between particles (over every
        coordinate; 0 for S = 1), in the units of theta.
    """
    s = theta.shape[0]
    phi, k, h = _direction_and_kernel(theta, grads, columns)
    with _ieee_fp32_matmul():
        drive = torch.mm(k / s, grads)
    repulse = phi - drive
    return {**_coupling(k, repulse, drive), "bandwidth": h, "particle_distance": _particle_distance(theta)}


def _coupling(k: Tensor, repulse: Tensor, drive: Tensor) -> dict[str, Tensor]:
    """The mean off-diagonal kernel value and the repulsive-to-driving norm ratio."""
    s = k.shape[0]
    off = (k.sum() - k.diagonal().sum()) / max(s * (s - 1), 1)
    return {"kernel_offdiag": off, "repulsion_ratio": repulse.norm() / drive.norm().clamp_min(1e-30)}


def _particle_distance(theta: Tensor) -> Tensor:
    """Root mean squared distance over pairs = sqrt(2 x the summed per-coordinate variance)."""
    if theta.shape[0] < 2:
        return theta.new_zeros(())
    return (2.0 * theta.var(0, correction=1).sum()).sqrt()


# --------------------------------------------------------------------------- prediction
def predictive_moments(outputs: Tensor, log_beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Predictive mean and variance parts of the particle mixture.

    Total variance = epistemic + aleatoric.

    Parameters
    ----------
    outputs : Tensor
        Particle outputs, shape (S, B, ...), in the target's units.
    log_beta : Tensor
        Log noise precision of every particle, shape (S,); beta in 1/(target units)^2.

    Returns
    -------
    mean : Tensor
        mean_i y_i, shape (B, ...), in the target's units.
    epistemic : Tensor
        mean_i y_i^2 - (mean_i y_i)^2, shape (B, ...), in (target units)^2 (computed as the
        population variance over particles, the same quantity without cancellation).
    aleatoric : Tensor
        mean_i 1/beta_i as a 0-d tensor (broadcasts against the others), in (target units)^2, in
        the dtype of ``outputs``.
    """
    mean = outputs.mean(0)
    epistemic = outputs.var(0, correction=0)
    aleatoric = torch.exp(-log_beta.to(outputs.dtype)).mean()
    return mean, epistemic, aleatoric


# --------------------------------------------------------------------------- engine
class SVGD:
    """Vectorised SVGD engine over an ensemble module (see the module docstring).

    Log joint of particle i on a mini-batch of B out of N = ``num_train`` samples:
        (N/B) [ -beta_i/2 sum_valid (y - f_i)^2 + (n_y/2) log beta_i ]
            + log p(w_i) + log p(log beta_i),
    n_y the number of valid target values. ``land_only=True`` (default) counts only cells
    where ``mask`` is True (sum and n_y); ``land_only=False`` is the published variant:
    every cell counts (the caller puts zeros at invalid cells) and ``mask`` is ignored.
    Weight prior: ``weight_prior(w) -> (S,)`` on each stacked parameter (default
    Student-t a=1, b=0.05). Noise prior on log beta from beta ~ Gamma(noise_shape,
    rate noise_rate): ``"correct"`` a log beta - b beta (change of variables, default) or
    ``"published"`` (a-1) log beta - b beta.

    One :meth:`step`: gradients of every particle's log joint (forward/backward in
    particle chunks of ``particle_chunk``, same mathematics), the SVGD direction over all
    particles at once (:func:`svgd_direction`, log beta part of theta), -phi written into
    ``.grad`` and one Adam step (stacked parameters; Adam is elementwise, so this is one
    Adam per particle). Two groups: weights ``lr``, log beta ``lr_noise``.
    ``kernel``: ``"rbf"`` on all of theta (the paper); ``"last_layer"`` on the parameters of
    ``ensemble.last_layer_parameters()`` only (a kernel in a space of tens of dimensions, where
    the repulsive term is not vanishingly small); ``"function"`` on the particles' outputs at the
    counted cells of the mini-batch (:meth:`function_space_grads`); ``"none"`` phi = G.
    ``scheduler_step(metric)`` drives one ReduceLROnPlateau over both groups;
    ``set_lr_factor(factor)`` sets a schedule learned elsewhere instead.
    ``learn_noise=False`` freezes log beta (not in theta, not optimised).
    ``autocast_dtype`` (e.g. torch.bfloat16) autocasts the forward only; parameters and the
    likelihood stay in the parameters' dtype.
    ``predict_chunk`` (None: ``particle_chunk``) is the particle chunk of :meth:`predict`;
    inference keeps no activations for a backward pass, so it can evaluate more particles
    at once than training (same values).
    ``compile_ensemble`` (default off) compiles the forward with ``torch.compile``
    (``compile_backend``, default inductor). An ensemble with ``particle_template(n)`` (the
    gracefill backbones) is run through ``torch.func.functional_call`` on an n-particle
    template with the chunk's parameter and buffer slices as inputs: the slice bounds are
    not constants of the graph, so every chunk of the same size shares one compilation
    (one more for eval mode). Compiled prediction pads a batch smaller than the first one
    it saw to that size and crops the outputs (eval-mode outputs are per sample), so a
    ragged last batch compiles nothing new. Other ensembles are compiled in place
    (``nn.Module.compile``), one compilation per distinct chunk.
    ``compile_scope`` "blocks" compiles the template's ``compile_regions()`` one by one
    instead of its whole forward (regional compilation): repeated blocks of one class and
    input shape share their compiled code, so compiling takes a fraction of the whole graph's
    time, while the glue between them (sums, concatenations, the input and output layers)
    runs eagerly.
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
        particle_chunk: int | None = None,
        autocast_dtype: torch.dtype | None = None,
        plateau_factor: float = 0.1,
        plateau_patience: int = 10,
        fused: bool | None = None,
        predict_chunk: int | None = None,
        compile_ensemble: bool = False,
        compile_backend: str | Callable = "inductor",
        compile_scope: str = "network",
        likelihood_weight: float = 1.0,
        kernel: str = "rbf",
    ) -> None:
        if noise_prior not in _NOISE_PRIORS:
            raise ValueError(f"noise_prior must be one of {_NOISE_PRIORS}, got {noise_prior!r}")
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        if not 0 < likelihood_weight <= 1:
            raise ValueError(f"likelihood_weight must be in (0, 1], got {likelihood_weight!r}")
        if particle_chunk is not None and particle_chunk < 1:
            raise ValueError("particle_chunk must be None or >= 1")
        if predict_chunk is not None and predict_chunk < 1:
            raise ValueError("predict_chunk must be None or >= 1")
        if compile_scope not in _COMPILE_SCOPES:
            raise ValueError(f"compile_scope must be one of {_COMPILE_SCOPES}, got {compile_scope!r}")
        if compile_ensemble and compile_scope == "blocks":
            if not (hasattr(ensemble, "particle_template") and hasattr(ensemble, "compile_regions")):
                raise ValueError("compile_scope 'blocks' needs an ensemble with particle_template() and "
                                 "compile_regions() methods (the gracefill backbones)")
            _allow_recompiles(_BLOCK_RECOMPILES)
        self.ensemble = ensemble
        self.compile_backend = compile_backend
        self.compile_scope = compile_scope
        # chunk size -> (template, its call: compiled, or running compiled regions under scope
        # "blocks"); None when not compiled through templates
        self._compiled: dict[int, tuple[nn.Module, Callable]] | None = None
        self._predict_batch: int | None = None
        if compile_ensemble and hasattr(ensemble, "particle_template"):
            self._compiled = {}
        elif compile_ensemble:
            ensemble.compile(backend=compile_backend)  # in place: same module and state_dict keys
        self.num_particles = int(ensemble.num_particles)
        self.num_train = int(num_train)
        self.weight_prior = weight_prior if weight_prior is not None else StudentTPrior()
        self.noise_prior = noise_prior
        self.noise_shape = float(noise_shape)
        self.noise_rate = float(noise_rate)
        self.land_only = bool(land_only)
        self.learn_noise = bool(learn_noise)
        self.particle_chunk = particle_chunk
        self.predict_chunk = predict_chunk
        self.autocast_dtype = autocast_dtype
        self.likelihood_weight = float(likelihood_weight)
        self.kernel_name = kernel
        self.diagnostics: dict[str, Tensor] = {}

        s = self.num_particles
        #: every particle of the group (a sharded engine holds only some of them)
        self.total_particles = s
        self._params = [p for p in ensemble.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("the ensemble has no trainable parameters")
        for p in self._params:
            if p.dim() == 0 or p.shape[0] != s:
                raise ValueError(f"every parameter needs a leading particle axis of size {s}, got {tuple(p.shape)}")
        ref = self._params[0]
        if log_beta_init is None:
            gamma = torch.distributions.Gamma(torch.tensor(self.noise_shape, dtype=torch.float64),
                                              torch.tensor(self.noise_rate, dtype=torch.float64))
            init = gamma.sample((s,)).log()
        else:
            init = torch.as_tensor(log_beta_init, dtype=torch.float64).expand(s)
        self.log_beta = nn.Parameter(init.to(device=ref.device, dtype=ref.dtype).clone(),
                                     requires_grad=self.learn_noise)
        self._kernel_columns = self._last_layer_columns() if kernel == "last_layer" else None

        groups: list[dict[str, Any]] = [{"params": self._params, "lr": lr}]
        if self.learn_noise:
            groups.append({"params": [self.log_beta], "lr": lr_noise})
        if fused is None:
            fused = ref.device.type == "cuda" and ref.is_floating_point()
        self.optimizer = torch.optim.Adam(groups, lr=lr, fused=fused or None)
        self._base_lrs = [group["lr"] for group in groups]
        self.scheduler = ReduceLROnPlateau(self.optimizer, mode="min", factor=plateau_factor,
                                           patience=plateau_patience)

    # ----------------------------------------------------------------- pieces
    @property
    def _variables(self) -> list[Tensor]:
        """The tensors that make up theta, in flattening order (log beta last)."""
        return self._params + ([self.log_beta] if self.learn_noise else [])

    def theta(self) -> Tensor:
        """Flattened particles theta (S, P): every trainable parameter, then log beta.

        Returns
        -------
        Tensor
            Detached copy, shape (S, P): each trainable parameter's per-particle entries flattened in
            ``ensemble.parameters()`` order, then log beta (one column, only when ``learn_noise``).
        """
        s = self.num_particles
        return torch.cat([v.detach().reshape(s, -1) for v in self._variables], dim=1)

    def _last_layer_columns(self) -> Tensor:
        """theta's columns that hold the parameters of ``ensemble.last_layer_parameters()``."""
        chosen = getattr(self.ensemble, "last_layer_parameters", None)
        if chosen is None:
            raise ValueError("kernel 'last_layer' needs an ensemble with a last_layer_parameters() method")
        ids = {id(p) for p in chosen()}
        columns, offset = [], 0
        for v in self._variables:
            n = v.numel() // self.num_particles
            if id(v) in ids:
                columns.append(torch.arange(offset, offset + n))
            offset += n
        if not columns:
            raise ValueError("kernel 'last_layer': last_layer_parameters() holds no trainable parameter")
        return torch.cat(columns).to(self.log_beta.device)

    def _all(self, t: Tensor) -> Tensor:
        """Every particle's rows of ``t`` (leading axis: this engine's particles); see ShardedSVGD."""
        return t

    def _own(self, t: Tensor) -> Tensor:
        """This engine's rows of ``t`` (leading axis: every particle of the group)."""
        return t

    def _flat_grads(self) -> Tensor:
        s = self.num_particles
        return torch.cat([(v.grad if v.grad is not None else torch.zeros_like(v)).reshape(s, -1)
                          for v in self._variables], dim=1)

    def _chunks(self, chunk: int | None = None) -> list[slice | None]:
        s, c = self.num_particles, (self.particle_chunk if chunk is None else chunk)
        if c is None or c >= s:
            return [None]
        return [slice(a, min(a + c, s)) for a in range(0, s, c)]

    def _forward(self, x: Tensor, sl: slice | None) -> Tensor:
        ctx = (torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else contextlib.nullcontext())
        with ctx:
            if self._compiled is not None:
                out = self._compiled_forward(x, slice(None) if sl is None else sl)
            else:
                out = self.ensemble(x) if sl is None else self.ensemble(x, particles=sl)
        return out.to(self.log_beta.dtype)

    def _compiled_forward(self, x: Tensor, sl: slice) -> Tensor:
        """The ensemble's forward on particles ``sl`` through the compiled call of its size."""
        from torch.func import functional_call

        n = len(range(self.num_particles)[sl])
        if n not in self._compiled:
            template = self.ensemble.particle_template(n)

            def call(tensors: dict[str, Tensor], inputs: Tensor) -> Tensor:
                return functional_call(template, tensors, (inputs,))

            if self.compile_scope == "blocks":
                for region in template.compile_regions():
                    region.compile(backend=self.compile_backend, dynamic=False)
                self._compiled[n] = (template, call)
            else:
                self._compiled[n] = (template, torch.compile(call, backend=self.compile_backend, dynamic=False))
        template, call = self._compiled[n]
        template.train(self.ensemble.training)
        tensors = {name: t[sl] for name, t in self.ensemble.named_parameters()}
        tensors.update({name: t[sl] for name, t in self.ensemble.named_buffers()})
        return call(tensors, x)

    def log_prior_log_beta(self, log_beta: Tensor) -> Tensor:
        """Log density of log beta (elementwise, constants dropped).

        ``"correct"``: a log beta - b beta, ``"published"``: (a - 1) log beta - b beta, with a =
        ``noise_shape`` and b = ``noise_rate``.

        Parameters
        ----------
        log_beta : Tensor
            Log noise precision, any shape (e.g. (S,)); beta in 1/(target units)^2.

        Returns
        -------
        Tensor
            Log prior density, same shape as ``log_beta``.
        """
        a = self.noise_shape if self.noise_prior == "correct" else self.noise_shape - 1.0
        return a * log_beta - self.noise_rate * log_beta.exp()

    def log_joint_grads(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Gradients G (S, P) of every particle's log joint on the batch (x, y, mask).

        The gradients are accumulated in the parameters' ``.grad`` (the previous content
        is discarded) chunk by chunk, then flattened in :meth:`theta` order. Puts the ensemble in
        train mode. No host synchronisation.

        Parameters
        ----------
        x : Tensor
            Inputs shared by all particles, shape (B, ...).
        y : Tensor
            Targets, shape of one particle's outputs (B, ...), in the target's units; NaN is harmless
            at cells that ``mask`` excludes (with ``land_only``).
        mask : Tensor or None, default None
            Boolean, broadcastable to ``y``, True at counted cells; None (or ``land_only=False``):
            every cell counts.

        Returns
        -------
        G : Tensor
            Gradients of the log joints with respect to theta, shape (S, P).
        stats : dict of str to Tensor
            Detached: ``sse`` (S,) per-particle sum of squared errors over the counted cells, in
            (target units)^2; ``n_y`` (0-d) number of counted cells; ``log_joint`` (S,);
            ``output_mean`` (B, ...) mean over particles, in the target's units; ``sse_mean`` (0-d)
            squared error of the mean output over the counted cells, in (target units)^2.
        """
        y, mask, n_y, scale = self._start_step(x, y, mask)

        sse_parts, lik_parts = [], []
        out_sum = None
        for sl in self._chunks():
            out = self._forward(x, sl)
            r2 = (out - y).square()
            if mask is not None:
                r2 = r2.masked_fill(~mask, 0.0)
            sse = r2.reshape(r2.shape[0], -1).sum(1)
            lb = self.log_beta if sl is None else self.log_beta[sl]
            lik = scale * (-0.5 * lb.exp() * sse + 0.5 * n_y * lb)
            lik.sum().backward()
            sse_parts.append(sse.detach())
            lik_parts.append(lik.detach())
            part = out.detach().sum(0)
            out_sum = part if out_sum is None else out_sum + part

        log_prior = self._log_prior_backward(1.0)

        out_mean = out_sum / self.num_particles
        r2m = (out_mean - y).square()
        if mask is not None:
            r2m = r2m.masked_fill(~mask, 0.0)
        stats = {
            "sse": torch.cat(sse_parts),
            "n_y": n_y,
            "log_joint": torch.cat(lik_parts) + log_prior.detach(),
            "output_mean": out_mean,
            "sse_mean": r2m.sum(),
        }
        return self._flat_grads(), stats

    def _start_step(self, x: Tensor, y: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor, float]:
        """Train mode, cleared gradients; the target with invalid cells at 0 (NaN targets there stay
        harmless), the mask of counted cells (None: all), their number and the likelihood's N/B weight."""
        if not self.ensemble.training:
            self.ensemble.train()
        for v in self._variables:
            v.grad = None
        y = y.to(self.log_beta.dtype)
        if self.land_only and mask is not None:
            mask = torch.broadcast_to(mask.to(device=y.device, dtype=torch.bool), y.shape)
            y = y.masked_fill(~mask, 0.0)
            n_y = mask.sum().to(y.dtype)
        else:
            mask = None
            n_y = y.new_full((), float(y.numel()))
        return y, mask, n_y, self.likelihood_weight * self.num_train / x.shape[0]

    def _log_prior_backward(self, weight: float) -> Tensor:
        """Accumulate ``weight`` x the gradient of every particle's log prior; returns it (S,), detached."""
        log_prior = self.log_prior_log_beta(self.log_beta)
        for p in self._params:
            log_prior = log_prior + self.weight_prior(p)
        (weight * log_prior.sum()).backward()
        return log_prior.detach()

    def function_space_grads(self, x: Tensor, y: Tensor, mask: Tensor | None = None,
                             diagnose: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """The ascent direction (S, P) of the function-space kernel (``kernel="function"``) and the
        statistics of :meth:`log_joint_grads`.

        Two passes over the particle chunks. First every particle's outputs f on the batch (train
        mode, no graph; BatchNorm's running statistics are put back, so they move once per step);
        then phi_f = :func:`function_space_direction` of the outputs at the counted cells and
        their log-likelihood gradients scale * beta_i * (y - f_i), and one backward pass of
        sum_i <f_i, phi_f_i> pulls it back to each particle's weights (J_i^T phi_f_i). log beta
        and the weight prior stay out of the kernel: each particle takes 1/S of its own gradient
        of them, the weight they have in phi where the kernel is the identity.

        Parameters
        ----------
        x : Tensor
            Inputs shared by all particles, shape (B, ...).
        y : Tensor
            Targets, shape of one particle's outputs (B, ...), in the target's units; NaN is harmless
            at cells that ``mask`` excludes (with ``land_only``).
        mask : Tensor or None, default None
            Boolean, broadcastable to ``y``, True at counted cells; None (or ``land_only=False``):
            every cell counts.
        diagnose : bool, default False
            Store the function-space kernel's coupling (``kernel_offdiag``, ``repulsion_ratio``) and
            the particles' distance (``particle_distance``) in ``self.diagnostics``.

        Returns
        -------
        phi : Tensor
            Ascent direction in :meth:`theta` order, shape (S, P) (also left in ``.grad``).
        stats : dict of str to Tensor
            Detached: ``sse`` (S,) per-particle sum of squared errors over the counted cells, in
            (target units)^2; ``n_y`` (0-d) number of counted cells; ``log_joint`` (S,);
            ``output_mean`` (B, ...) mean over particles, in the target's units; ``sse_mean`` (0-d)
            squared error of the mean output over the counted cells, in (target units)^2.
        """
        y, mask, n_y, scale = self._start_step(x, y, mask)
        buffers = list(self.ensemble.buffers())
        saved = [b.detach().clone() for b in buffers]
        with torch.no_grad():
            f = torch.cat([self._forward(x, sl) for sl in self._chunks()])
            for b, value in zip(buffers, saved):
                b.copy_(value)
            residual = y - f
            if mask is not None:
                f = f.masked_fill(~mask, 0.0)
                residual = residual.masked_fill(~mask, 0.0)
            sse = residual.square().reshape(f.shape[0], -1).sum(1)
            beta = self.log_beta.detach().exp().view(-1, *([1] * (f.dim() - 1)))
            f_all = self._all(f)
            g_all = self._all(scale * beta * residual)
            flat = f_all.reshape(f_all.shape[0], -1)
            phi_all, k, _ = function_space_direction(flat, g_all.reshape(flat.shape))
            phi_f = self._own(phi_all).reshape(f.shape)
        share = 1.0 / self.total_particles
        for sl in self._chunks():
            out = self._forward(x, sl)
            lb = self.log_beta if sl is None else self.log_beta[sl]
            part = sse if sl is None else sse[sl]
            lik = scale * (-0.5 * lb.exp() * part + 0.5 * n_y * lb)
            ((out * (phi_f if sl is None else phi_f[sl])).sum() + share * lik.sum()).backward()
        log_prior = self._log_prior_backward(share)
        if diagnose:
            with torch.no_grad(), _ieee_fp32_matmul():
                drive = torch.mm(k / k.shape[0], g_all.reshape(flat.shape))
                self.diagnostics = {**_coupling(k, phi_all - drive, drive),
                                    "particle_distance": _particle_distance(self._all(self.theta()))}
        with torch.no_grad():
            out_mean = f_all.mean(0)
            r2m = (out_mean - y).square()
            if mask is not None:
                r2m = r2m.masked_fill(~mask, 0.0)
            stats = {"sse": sse, "n_y": n_y, "output_mean": out_mean, "sse_mean": r2m.sum(),
                     "log_joint": scale * (-0.5 * self.log_beta.detach().exp() * sse + 0.5 * n_y
                                           * self.log_beta.detach()) + log_prior}
        return self._flat_grads(), stats

    def kernel(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """RBF kernel (S, S) and bandwidth h of flattened particles; see :func:`rbf_kernel`.

        Parameters
        ----------
        theta : Tensor
            Flattened particles, shape (S, P).

        Returns
        -------
        K : Tensor
            Kernel matrix, shape (S, S), dimensionless.
        h : Tensor
            Bandwidth, 0-d, in the units of theta squared.
        """
        return rbf_kernel(theta)

    def direction(self, theta: Tensor, grads: Tensor) -> Tensor:
        """SVGD ascent direction phi (S, P) from the log joints' gradients G.

        See :func:`svgd_direction` (with ``kernel="last_layer"`` on the output layer's columns). With
        ``kernel="none"`` phi = G: every particle ascends its own log joint (a deep ensemble, the
        reference that shows what the kernel adds). ``kernel="function"`` has no direction in
        parameter space from G alone: :meth:`step` takes it from :meth:`function_space_grads`.

        Parameters
        ----------
        theta : Tensor
            Flattened particles, shape (S, P).
        grads : Tensor
            Gradients G of the log joints, shape (S, P).

        Returns
        -------
        Tensor
            phi, shape (S, P).

        Raises
        ------
        ValueError
            With ``kernel="function"``.
        """
        if self.kernel_name == "none":
            return grads
        if self.kernel_name == "function":
            raise ValueError("kernel 'function' works on the particles' outputs: use function_space_grads")
        return svgd_direction(theta, grads, self._kernel_columns)

    def diagnose(self, theta: Tensor, grads: Tensor) -> dict[str, Tensor]:
        """:func:`kernel_diagnostics` of all particles.

        What the parameter-space kernel does or would do (the RBF kernel on every parameter for
        ``none``).

        Parameters
        ----------
        theta : Tensor
            Flattened particles, shape (S, P).
        grads : Tensor
            Gradients G of the log joints, shape (S, P).

        Returns
        -------
        dict of str to Tensor
            0-d tensors ``kernel_offdiag``, ``repulsion_ratio``, ``bandwidth`` and
            ``particle_distance``, as in :func:`kernel_diagnostics`.
        """
        return kernel_diagnostics(theta, grads, self._kernel_columns)

    def all_log_beta(self) -> Tensor:
        """log beta (S,) of every particle, detached.

        Returns
        -------
        Tensor
            Log noise precision, shape (S,); beta in 1/(target units)^2.
        """
        return self.log_beta.detach()

    # ----------------------------------------------------------------- training
    def step(self, x: Tensor, y: Tensor, mask: Tensor | None = None, diagnose: bool = False) -> dict[str, Tensor]:
        """One SVGD update on one mini-batch.

        Writes -phi into ``.grad`` and takes one optimiser step; returns the statistics of
        :meth:`log_joint_grads` (tensors, no host synchronisation).

        Parameters
        ----------
        x : Tensor
            Inputs shared by all particles, shape (B, ...).
        y : Tensor
            Targets, shape of one particle's outputs (B, ...), in the target's units; NaN is harmless
            at cells that ``mask`` excludes (with ``land_only``).
        mask : Tensor or None, default None
            Boolean, broadcastable to ``y``, True at counted cells; None (or ``land_only=False``):
            every cell counts.
        diagnose : bool, default False
            Also store :func:`kernel_diagnostics` of this step in ``self.diagnostics`` (for the
            function-space kernel, its coupling in function space).

        Returns
        -------
        dict of str to Tensor
            The statistics of :meth:`log_joint_grads`.
        """
        if self.kernel_name == "function":
            phi, stats = self.function_space_grads(x, y, mask, diagnose=diagnose)
        else:
            grads, stats = self.log_joint_grads(x, y, mask)
            with torch.no_grad():
                if diagnose:
                    self.diagnostics = self.diagnose(self.theta(), grads)
                phi = self.direction(self.theta(), grads)
            del grads
        with torch.no_grad():
            s, offset = self.num_particles, 0
            for v in self._variables:
                n = v.numel() // s
                if v.grad is None:
                    v.grad = torch.empty_like(v)
                v.grad.copy_(phi[:, offset:offset + n].reshape(v.shape)).neg_()
                offset += n
        self.optimizer.step()
        return stats

    def scheduler_step(self, metric: float | Tensor) -> None:
        """Once per epoch: ReduceLROnPlateau on ``metric`` (training RMSE) over both groups.

        Parameters
        ----------
        metric : float or Tensor
            Training RMSE, in the target's units (a tensor is read on the host).

        Returns
        -------
        None
        """
        self.scheduler.step(float(metric))

    def set_lr_factor(self, factor: float) -> None:
        """Set both groups' learning rates to ``factor`` times their initial ones (a schedule
        learned elsewhere, e.g. on validation folds, in place of the plateau scheduler).

        Parameters
        ----------
        factor : float
            Multiplier of ``lr`` and ``lr_noise``, > 0.

        Returns
        -------
        None
        """
        if not factor > 0:
            raise ValueError(f"learning-rate factor must be > 0, got {factor!r}")
        for group, base in zip(self.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * float(factor)

    @property
    def lrs(self) -> list[float]:
        """Current learning rates (weights, then log beta when learned).

        Returns
        -------
        list of float
            One learning rate per optimiser group.
        """
        return [g["lr"] for g in self.optimizer.param_groups]

    # ----------------------------------------------------------------- prediction
    def predict(self, x: Tensor) -> Tensor:
        """Particle outputs (S, B, ...) in eval mode (BatchNorm running statistics).

        Under inference mode, in chunks of ``predict_chunk`` particles (None: chunked like
        training); the ensemble's mode is restored.

        Parameters
        ----------
        x : Tensor
            Inputs shared by all particles, shape (B, ...).

        Returns
        -------
        Tensor
            Outputs, shape (S, B, ...), in the target's units and the dtype of log beta.
        """
        was_training = self.ensemble.training
        self.ensemble.eval()
        batch = x.shape[0]
        if self._compiled is not None:
            self._predict_batch = self._predict_batch or batch
            if batch < self._predict_batch:
                x = torch.cat((x, x.new_zeros(self._predict_batch - batch, *x.shape[1:])))
        try:
            with torch.inference_mode():
                outs = [self._forward(x, sl) for sl in self._chunks(self.predict_chunk)]
        finally:
            self.ensemble.train(was_training)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
        return out[:, :batch]

    def predictive_moments(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`predictive_moments` of :meth:`predict` (x) with the current log beta.

        Parameters
        ----------
        x : Tensor
            Inputs shared by all particles, shape (B, ...).

        Returns
        -------
        mean : Tensor
            Predictive mean, shape (B, ...), in the target's units.
        epistemic : Tensor
            Variance over particles, shape (B, ...), in (target units)^2.
        aleatoric : Tensor
            Mean noise variance mean_i 1/beta_i, 0-d, in (target units)^2.
        """
        return predictive_moments(self.predict(x), self.log_beta.detach())

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Ensemble, log beta, optimiser and scheduler; loadable with weights_only=True.

        Returns
        -------
        dict of str to Any
            ``ensemble`` (its state_dict), ``log_beta`` (S,) (a detached copy), ``optimizer`` and
            ``scheduler`` (their state_dicts).
        """
        return {
            "ensemble": self.ensemble.state_dict(),
            "log_beta": self.log_beta.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ensemble, log beta, optimiser and scheduler from :meth:`state_dict`, in place.

        Parameters
        ----------
        state : dict of str to Any
            A dict as returned by :meth:`state_dict`.

        Returns
        -------
        None
        """
        self.ensemble.load_state_dict(state["ensemble"])
        with torch.no_grad():
            self.log_beta.copy_(state["log_beta"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
