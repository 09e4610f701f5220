"""Ensemble-native layers: S network replicas ("particles") evaluated as one wide network.

Layout conventions shared by every layer here:

* every parameter and every per-particle buffer has a leading particle axis of size S, so
  ``torch.cat([p.reshape(S, -1) for p in m.parameters()], 1)`` is the (S, P) particle matrix;
* activations inside the network are laid out (B, S' * C, H, W): channel ``s * C + c`` is
  channel c of the s-th selected particle; convolutions use ``groups = S'``;
* ``particles`` is a python ``slice`` of the particle axis; layers read ``p[particles]`` so
  gradients flow into the full parameters and only the selected particles are evaluated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("prelu", "relu", "silu", "mish")


def num_selected(particles: slice, num_particles: int) -> int:
    """Number of particles that ``particles`` selects out of ``num_particles``."""
    return len(range(num_particles)[particles])


def normalize_particles(particles, num_particles: int) -> tuple[slice, int]:
    """Turn the ``particles`` argument (None or slice) into (slice, count); reject others."""
    if particles is None:
        particles = slice(None)
    if not isinstance(particles, slice):
        raise TypeError(f"particles must be None or a slice, got {type(particles).__name__}")
    n = num_selected(particles, num_particles)
    if n == 0:
        raise ValueError(f"particles {particles} selects none of the {num_particles} particles")
    return particles, n


def split_particles(x: torch.Tensor, n: int) -> torch.Tensor:
    """View (B, n*C, ...) as (B, n, C, ...) (a view for any memory format)."""
    return x.unflatten(1, (n, x.shape[1] // n))


def is_channels_last(x: torch.Tensor) -> bool:
    """True when the 4-d tensor ``x`` is laid out channels-last (NHWC) and not also NCHW
    (a tensor with C = 1 or H = W = 1 is both; it is treated as NCHW)."""
    return (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous())


def particle_cat(tensors, n: int) -> torch.Tensor:
    """Concatenate (B, n*C_k, H, W) tensors channel-wise *within* each particle.

    Keeps the layout: channels-last inputs give a channels-last result (concatenation along
    the innermost axis of the NHWC view), otherwise a contiguous NCHW result. Same values.
    """
    if is_channels_last(tensors[0]):
        parts = [t.permute(0, 2, 3, 1).unflatten(3, (n, t.shape[1] // n)) for t in tensors]
        return torch.cat(parts, dim=4).flatten(3, 4).permute(0, 3, 1, 2)
    return torch.cat([split_particles(t, n) for t in tensors], dim=2).flatten(1, 2)


def _default_conv_init_(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Initialise particle by particle exactly as torch's ``_ConvNd.reset_parameters``.

    ``weight[s]`` has the plain layer's weight layout, so torch's fan-in rule applies as is
    (for a transposed conv: ``weight.size(1) * k * k`` of its (in, out, k, k) weight).
    """
    with torch.no_grad():
        for s in range(weight.shape[0]):
            nn.init.kaiming_uniform_(weight[s], a=math.sqrt(5))
            if bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight[s])
                if fan_in != 0:
                    bound = 1.0 / math.sqrt(fan_in)
                    nn.init.uniform_(bias[s], -bound, bound)


class EnsembleModule(nn.Module):
    """Base of ensemble modules: ``num_particles`` and copying one particle out as S = 1.

    Subclasses store their constructor arguments (except ``num_particles``) in
    ``self._config`` so that an S = 1 copy can be rebuilt.
    """

    def __init__(self, num_particles: int):
        super().__init__()
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        self.num_particles = num_particles
        self._config: dict = {}

    def particle_state(self, i: int) -> dict:
        """State dict of particle i alone (every entry sliced to ``[i:i+1]``, copied)."""
        S = self.num_particles
        if not -S <= i < S:
            raise IndexError(f"particle {i} out of range for {S} particles")
        i = i % S
        out = {}
        for k, v in self.state_dict().items():
            if v.dim() == 0 or v.shape[0] != S:
                raise RuntimeError(f"state entry {k} of shape {tuple(v.shape)} has no particle axis")
            out[k] = v[i : i + 1].detach().clone()
        return out

    def particle_template(self, n: int) -> "EnsembleModule":
        """An n-particle module of the same class and configuration on the meta device.

        It holds no data (no RNG draws, no memory): it is the structure that
        ``torch.func.functional_call`` runs with n-particle slices of this module's
        tensors, so that every particle chunk of size n shares one compiled graph.
        Train/eval mode is copied.
        """
        with torch.device("meta"):
            new = type(self)(num_particles=n, **self._config)
        new.train(self.training)
        return new

    def extract_particle(self, i: int) -> "EnsembleModule":
        """A new S = 1 module of the same class holding a copy of particle i.

        Built on the meta device (see :meth:`particle_template`) and filled with the copied
        tensors, which keep the source's dtype and device; train/eval mode is copied.
        """
        new = self.particle_template(1)
        new.load_state_dict(self.particle_state(i), assign=True)
        return new


def particle_slice_state(module: EnsembleModule, i: int) -> dict:
    """State dict of particle i of an ensemble module, loadable into its S = 1 copy."""
    return module.particle_state(i)


class EnsembleConv2d(EnsembleModule):
    """S independent ``nn.Conv2d`` as one grouped convolution.

    weight (S, out, in, k, k), bias (S, out). With ``shared_input`` the input is the plain
    (B, in, H, W) tensor shared by all particles and a dense conv with S' * out output
    channels is used (no input replication). A 1 x 1 convolution (stride 1, no padding) on
    NCHW activations runs as one batched matmul over the particles: same values, and on an
    H100 2.1x faster forward + backward than cuDNN's grouped 1 x 1 convolution (the DAU's
    96 -> 48 merge, bf16, bench/results/RESULTS.md).
    """

    pointwise_matmul = True  # performance knob (same values); the bench switches it off to compare

    def __init__(self, num_particles, in_channels, out_channels, kernel_size, stride=1,
                 padding=0, bias=True, shared_input=False):
        super().__init__(num_particles)
        self._config = dict(in_channels=in_channels, out_channels=out_channels,
                            kernel_size=kernel_size, stride=stride, padding=padding,
                            bias=bias, shared_input=shared_input)
        S, k = num_particles, kernel_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.padding, self.shared_input = stride, padding, shared_input
        self.is_pointwise = k == 1 and stride == 1 and padding == 0 and not shared_input
        self.weight = nn.Parameter(torch.empty(S, out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.empty(S, out_channels)) if bias else None
        _default_conv_init_(self.weight, self.bias)

    def forward(self, x: torch.Tensor, particles: slice = slice(None)) -> torch.Tensor:
        n = num_selected(particles, self.num_particles)
        if self.is_pointwise and self.pointwise_matmul and not is_channels_last(x):
            return self._pointwise(x, particles, n)
        w = self.weight[particles].flatten(0, 1)
        b = None if self.bias is None else self.bias[particles].flatten()
        groups = 1 if self.shared_input else n
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding, groups=groups)

    def _pointwise(self, x: torch.Tensor, particles: slice, n: int) -> torch.Tensor:
        """1 x 1 convolution as (n, out, in) @ (B, n, in, H*W), batched over B and particles."""
        B, _, H, W = x.shape
        w = self.weight[particles].flatten(2)                            # (n, out, in)
        y = torch.matmul(w, x.reshape(B, n, self.in_channels, H * W))    # (B, n, out, H*W)
        if self.bias is not None:
            y = y + self.bias[particles].unsqueeze(-1)
        return y.reshape(B, n * self.out_channels, H, W)


class EnsembleConvTranspose2d(EnsembleModule):
    """S independent ``nn.ConvTranspose2d`` as one grouped transposed convolution.

    weight (S, in, out, k, k) (torch's per-layer (in, out, k, k) layout per particle), bias
    (S, out); applied as ``conv_transpose2d(groups=S')`` with weight (S' * in, out, k, k).

    With ``subpixel`` on, the U-nets' 4 x 4, stride 2, padding 1 up-sampling runs as a 3 x 3
    convolution to 4 * out channels (one per output pixel parity, the unused taps zero)
    followed by a 2x pixel shuffle: same values, 2.25x the multiply-adds. Off by default: on
    an H100 it made the compiled CBAM and both reference loops slower (bench/results/RESULTS.md).
    """

    subpixel = False  # performance knob (same values); the bench switches it on to compare

    def __init__(self, num_particles, in_channels, out_channels, kernel_size, stride=1,
                 padding=0, bias=True):
        super().__init__(num_particles)
        self._config = dict(in_channels=in_channels, out_channels=out_channels,
                            kernel_size=kernel_size, stride=stride, padding=padding, bias=bias)
        S, k = num_particles, kernel_size
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(S, in_channels, out_channels, k, k))
        self.bias = nn.Parameter(torch.empty(S, out_channels)) if bias else None
        _default_conv_init_(self.weight, self.bias)

    def forward(self, x: torch.Tensor, particles: slice = slice(None)) -> torch.Tensor:
        n = num_selected(particles, self.num_particles)
        if self.subpixel and (self.weight.shape[-1], self.stride, self.padding) == (4, 2, 1):
            return self._subpixel(x, particles, n)
        w = self.weight[particles].flatten(0, 1)
        b = None if self.bias is None else self.bias[particles].flatten()
        return F.conv_transpose2d(x, w, b, stride=self.stride, padding=self.padding, groups=n)

    def _subpixel(self, x: torch.Tensor, particles: slice, n: int) -> torch.Tensor:
        """Output pixel (2i + a, 2j + b) takes input rows i + t - 1 through kernel row
        ky = a + 3 - 2t (t = 0, 1, 2; taps outside 0..3 are zero), likewise for columns."""
        w = self.weight[particles]                                         # (n, in, out, 4, 4)
        a, t, k = torch.meshgrid(*(torch.arange(m, device=w.device) for m in (2, 3, 4)), indexing="ij")
        pick = (k == a + 3 - 2 * t).to(w.dtype)                            # (parity, tap, kernel index)
        w3 = torch.einsum("atk,bul,ncokl->noabctu", pick, pick, w)         # (n, out, 2, 2, in, 3, 3)
        out = w.shape[2]
        b = None if self.bias is None else self.bias[particles].unsqueeze(-1).expand(n, out, 4).flatten()
        y = F.conv2d(x, w3.reshape(n * out * 4, w.shape[1], 3, 3), b, padding=1, groups=n)
        return F.pixel_shuffle(y, 2)


class EnsembleBatchNorm2d(EnsembleModule):
    """S independent ``nn.BatchNorm2d(C)`` over (B, S' * C, H, W).

    Affine weight/bias and running mean/var are (S, C), ``num_batches_tracked`` is (S,).
    Train mode normalises with batch statistics and updates the selected particles' running
    statistics (momentum 0.1, unbiased variance, as torch); eval mode uses the running ones.
    """

    def __init__(self, num_particles, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_particles)
        self._config = dict(num_features=num_features, eps=eps, momentum=momentum)
        S, C = num_particles, num_features
        self.num_features, self.eps, self.momentum = C, eps, momentum
        self.weight = nn.Parameter(torch.ones(S, C))
        self.bias = nn.Parameter(torch.zeros(S, C))
        self.register_buffer("running_mean", torch.zeros(S, C))
        self.register_buffer("running_var", torch.ones(S, C))
        self.register_buffer("num_batches_tracked", torch.zeros(S, dtype=torch.long))

    def forward(self, x: torch.Tensor, particles: slice = slice(None)) -> torch.Tensor:
        w = self.weight[particles].flatten()
        b = self.bias[particles].flatten()
        rm_sel = self.running_mean[particles]
        rv_sel = self.running_var[particles]
        if not self.training:
            return F.batch_norm(x, rm_sel.reshape(-1), rv_sel.reshape(-1), w, b, False,
                                self.momentum, self.eps)
        # F.batch_norm updates the running stats in place: hand it views of the buffers when
        # the selection is contiguous, otherwise copies that are written back afterwards.
        in_place = rm_sel.is_contiguous() and rv_sel.is_contiguous()
        rm = rm_sel.view(-1) if in_place else rm_sel.reshape(-1).clone()
        rv = rv_sel.view(-1) if in_place else rv_sel.reshape(-1).clone()
        y = F.batch_norm(x, rm, rv, w, b, True, self.momentum, self.eps)
        with torch.no_grad():
            if not in_place:
                self.running_mean[particles] = rm.view_as(rm_sel)
                self.running_var[particles] = rv.view_as(rv_sel)
            self.num_batches_tracked[particles] += 1
        return y


class EnsembleActivation(EnsembleModule):
    """The network's activation; for PReLU one slope per particle shared by all its uses.

    ``weight`` (S, 1), initial 0.25, as the published code's single shared ``nn.PReLU()``.
    ReLU, SiLU and Mish have no parameter. Works on any (B, S' * C, ...) tensor.
    """

    def __init__(self, num_particles, kind="prelu"):
        super().__init__(num_particles)
        key = kind.lower() if isinstance(kind, str) else kind
        if key not in ACTIVATIONS:
            raise ValueError(f"unknown activation {kind!r}: expected one of {', '.join(ACTIVATIONS)}")
        self._config = dict(kind=key)
        self.kind = key
        self.weight = nn.Parameter(torch.full((num_particles, 1), 0.25)) if key == "prelu" else None

    def forward(self, x: torch.Tensor, particles: slice = slice(None)) -> torch.Tensor:
        if self.kind == "prelu":
            n = num_selected(particles, self.num_particles)
            slopes = self.weight[particles].expand(n, x.shape[1] // n).reshape(-1)
            return F.prelu(x, slopes)
        if self.kind == "relu":
            return F.relu(x)
        if self.kind == "silu":
            return F.silu(x)
        return F.mish(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, num_particles={self.num_particles}"
