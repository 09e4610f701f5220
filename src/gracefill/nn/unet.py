"""The BCNN4GRACE U-net backbones (RRDB and CBAM variants), ensemble-native.

inc (3x3 s2 conv, no BN/act) -> E1 -> down1 -> E2 -> down2 -> C -> up2 -> D2 -> up1 -> D1
-> up0 -> outc (1x1), nf maps at every level; see design/model.md, "Network".

Grid sides that are not multiples of 8 are zero-padded at the bottom/right to the next
multiple of 8 and the output is cropped back (zeros match the "missing cell = 0" convention
of the inputs; note that in train mode the padded cells enter the BatchNorm statistics).
Sides below 8 are rejected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DAU, RCAB, RRDB, ConvBNAct, UpBNAct
from .layers import EnsembleActivation, EnsembleConv2d, EnsembleModule, normalize_particles, particle_cat

_MULTIPLE = 8


class _EnsembleUNet(EnsembleModule):
    """Shared U-net skeleton; subclasses choose the block and whether skips get a DAU."""

    block_cls: type = None
    skip_attention: bool = False

    def __init__(self, in_channels: int, out_channels: int, num_particles: int,
                 features: int = 48, activation: str = "prelu", channels_last: bool = False):
        super().__init__(num_particles)
        for label, v in (("in_channels", in_channels), ("out_channels", out_channels),
                         ("features", features)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{label} must be a positive int, got {v!r}")
        self.act = EnsembleActivation(num_particles, activation)  # validates the name first
        self._config = dict(in_channels=in_channels, out_channels=out_channels,
                            features=features, activation=self.act.kind,
                            channels_last=bool(channels_last))
        # Performance knob (same values): run the network on channels-last (NHWC) activations.
        self.channels_last = bool(channels_last)
        self.in_channels, self.out_channels, self.features = in_channels, out_channels, features
        S, nf, block = num_particles, features, self.block_cls
        self.inc = EnsembleConv2d(S, in_channels, nf, 3, 2, 1, bias=True, shared_input=True)
        self.rbE1 = block(S, nf)
        self.down1 = ConvBNAct(S, nf, nf, stride=2)
        self.rbE2 = block(S, nf)
        self.down2 = ConvBNAct(S, nf, nf, stride=2)
        self.rbC = block(S, nf)
        self.up2 = UpBNAct(S, nf)
        self.rbD2 = block(S, nf)
        self.up1 = UpBNAct(S, nf)
        self.rbD1 = block(S, nf)
        self.up0 = UpBNAct(S, nf)
        self.outc = EnsembleConv2d(S, nf, out_channels, 1, bias=True)
        if self.skip_attention:
            # dua1 .. dua5 act on the skips of inc, E1, down1, E2, down2 (published naming)
            self.skips = nn.ModuleDict({f"dua{k}": DAU(S, nf) for k in range(1, 6)})
        else:
            self.skips = None

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The output layer's parameters (the 1x1 conv, nf x Cout weights + Cout biases a particle):
        the coordinates of SVGD's ``last_layer`` kernel."""
        return list(self.outc.parameters())

    def compile_regions(self) -> list[nn.Module]:
        """The submodules that ``training.compile: blocks`` compiles one by one: each level's
        block (an RRDB as its dense blocks and DAUs), the down/up-sampling layers and the skip
        DAUs; the input and output convolutions, the sums and concatenations run eagerly.
        Modules of one class share their compiled code across instances of the same input
        shape (three levels of resolution), so the compilation is a fraction of the whole
        network's single graph."""
        regions = []
        for block in (self.rbE1, self.rbE2, self.rbC, self.rbD2, self.rbD1):
            regions.extend(block.compile_regions() if hasattr(block, "compile_regions") else [block])
        regions.extend([self.down1, self.down2, self.up2, self.up1, self.up0])
        if self.skips is not None:
            regions.extend(self.skips.values())
        return regions

    def _skip(self, k: int, x, particles):
        if self.skips is None:
            return x
        return self.skips[f"dua{k}"](x, particles, self.act)

    def forward(self, x: torch.Tensor, particles: slice | None = None) -> torch.Tensor:
        """(B, Cin, H, W) shared input -> (S', B, Cout, H, W), S' particles of ``particles``."""
        particles, n = normalize_particles(particles, self.num_particles)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H < _MULTIPLE or W < _MULTIPLE:
            raise ValueError(f"grid {H} x {W} is too small for the network: "
                             f"each side must be at least {_MULTIPLE} cells")
        pad_h, pad_w = (-H) % _MULTIPLE, (-W) % _MULTIPLE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        act, p = self.act, particles
        x1 = self.inc(x, p)
        x2 = self.rbE1(x1, p, act)
        x3 = self.down1(x2, p, act)
        x4 = self.rbE2(x3, p, act)
        x5 = self.down2(x4, p, act)
        x6 = self.rbC(x5, p, act)
        x7 = self.up2(particle_cat((x6, self._skip(5, x5, p)), n), p, act)
        x8 = self.rbD2(x7 + self._skip(4, x4, p), p, act)
        x9 = self.up1(particle_cat((x8, self._skip(3, x3, p)), n), p, act)
        x10 = self.rbD1(x9 + self._skip(2, x2, p), p, act)
        x11 = self.up0(particle_cat((x10, self._skip(1, x1, p)), n), p, act)
        y = self.outc(x11, p)[..., :H, :W]
        return y.unflatten(1, (n, self.out_channels)).transpose(0, 1).contiguous()


class RRDBUNet(_EnsembleUNet):
    """U-net with RRDB blocks and a DAU on every skip (published ``models/RRDB.py``)."""

    block_cls = RRDB
    skip_attention = True


class CBAMUNet(_EnsembleUNet):
    """U-net with RCAB (CBAM attention) blocks and plain skips (published ``models/CBAM.py``)."""

    block_cls = RCAB
    skip_attention = False
