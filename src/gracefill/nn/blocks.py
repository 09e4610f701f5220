"""Ensemble-native building blocks of the BCNN4GRACE U-nets (see design/model.md, "Blocks").

Every block's ``forward(x, particles, act)`` takes activations laid out (B, S' * nf, H, W),
the particle slice and the network's shared :class:`EnsembleActivation` (passed at call time,
not registered here, so the one slope per particle is owned by the network alone).
Attention reductions (channel max/mean, global pooling) run over each particle's own channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    EnsembleBatchNorm2d,
    EnsembleConv2d,
    EnsembleConvTranspose2d,
    EnsembleModule,
    num_selected,
    particle_cat,
    split_particles,
)


class ConvBNAct(EnsembleModule):
    """k x k conv (with bias) + BatchNorm + activation; dense layers and down-sampling."""

    def __init__(self, num_particles, in_channels, out_channels, stride=1):
        super().__init__(num_particles)
        self._config = dict(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.conv = EnsembleConv2d(num_particles, in_channels, out_channels, 3, stride, 1, bias=True)
        self.bn = EnsembleBatchNorm2d(num_particles, out_channels)

    def forward(self, x, particles, act):
        return act(self.bn(self.conv(x, particles), particles), particles)


class UpBNAct(EnsembleModule):
    """4 x 4 transposed conv, stride 2, pad 1 (2nf -> nf, with bias) + BatchNorm + activation."""

    def __init__(self, num_particles, nf):
        super().__init__(num_particles)
        self._config = dict(nf=nf)
        self.conv = EnsembleConvTranspose2d(num_particles, 2 * nf, nf, 4, 2, 1, bias=True)
        self.bn = EnsembleBatchNorm2d(num_particles, nf)

    def forward(self, x, particles, act):
        return act(self.bn(self.conv(x, particles), particles), particles)


class DAU(EnsembleModule):
    """Dual attention unit: [spatial attention | channel attention] -> 1x1 conv -> + input.

    Spatial: 3x3 conv (no bias) of the stacked channel [max, mean] maps, sigmoid, multiply.
    Channel: global average pool, 1x1 nf -> max(1, nf // 24), act, 1x1 back (no biases),
    sigmoid, multiply. Merge: 1x1 conv 2nf -> nf without bias.
    """

    reduction = 24

    def __init__(self, num_particles, nf):
        super().__init__(num_particles)
        self._config = dict(nf=nf)
        S, hidden = num_particles, max(1, nf // self.reduction)
        self.sa_conv = EnsembleConv2d(S, 2, 1, 3, 1, 1, bias=False)
        self.ca_down = EnsembleConv2d(S, nf, hidden, 1, bias=False)
        self.ca_up = EnsembleConv2d(S, hidden, nf, 1, bias=False)
        self.merge = EnsembleConv2d(S, 2 * nf, nf, 1, bias=False)

    def forward(self, x, particles, act):
        n = num_selected(particles, self.num_particles)
        xp = split_particles(x, n)  # (B, n, nf, H, W)
        maps = torch.stack((xp.max(dim=2).values, xp.mean(dim=2)), dim=2).flatten(1, 2)
        sa = (xp * torch.sigmoid(self.sa_conv(maps, particles)).unsqueeze(2)).flatten(1, 2)
        y = x.mean(dim=(2, 3), keepdim=True)
        y = self.ca_up(act(self.ca_down(y, particles), particles), particles)
        ca = x * torch.sigmoid(y)
        return self.merge(particle_cat((sa, ca), n), particles) + x


class DenseResidualBlock(EnsembleModule):
    """Four 3x3 conv + BN + act layers with dense connections (growth nf).

    Layer k sees the per-particle concatenation [input, out_1, ..., out_{k-1}];
    output = DAU(out_4) + DAU(input).
    """

    def __init__(self, num_particles, nf):
        super().__init__(num_particles)
        self._config = dict(nf=nf)
        S = num_particles
        self.b1 = ConvBNAct(S, 1 * nf, nf)
        self.b2 = ConvBNAct(S, 2 * nf, nf)
        self.b3 = ConvBNAct(S, 3 * nf, nf)
        self.b4 = ConvBNAct(S, 4 * nf, nf)
        self.dua_in = DAU(S, nf)
        self.dua_res = DAU(S, nf)

    def forward(self, x, particles, act):
        n = num_selected(particles, self.num_particles)
        feats = x
        layers = (self.b1, self.b2, self.b3, self.b4)
        for k, layer in enumerate(layers):
            out = layer(feats, particles, act)
            if k + 1 < len(layers):
                feats = particle_cat((feats, out), n)
        return self.dua_in(out, particles, act) + self.dua_res(x, particles, act)


class RRDB(EnsembleModule):
    """Residual-in-residual dense block: three dense residual blocks in sequence;
    output = DAU(sequence output) + DAU(input)."""

    def __init__(self, num_particles, nf):
        super().__init__(num_particles)
        self._config = dict(nf=nf)
        S = num_particles
        self.dense_blocks = nn.ModuleList([DenseResidualBlock(S, nf) for _ in range(3)])
        self.dua_in = DAU(S, nf)
        self.dua_res = DAU(S, nf)

    def compile_regions(self) -> list[nn.Module]:
        """Its dense blocks and its two DAUs: the parts compiled one by one (see the U-net's)."""
        return [*self.dense_blocks, self.dua_in, self.dua_res]

    def forward(self, x, particles, act):
        out = x
        for block in self.dense_blocks:
            out = block(out, particles, act)
        return self.dua_in(out, particles, act) + self.dua_res(x, particles, act)


class CBAM(EnsembleModule):
    """Convolutional block attention: channel attention, then spatial attention.

    Channel: sigmoid(MLP(avg pool) + MLP(max pool)), MLP = 1x1 nf -> max(1, nf // 32), act,
    1x1 back, no biases. Spatial: 3x3 conv (with bias) of stacked channel [mean, max], sigmoid.
    """

    reduction = 32

    def __init__(self, num_particles, nf):
        super().__init__(num_particles)
        self._config = dict(nf=nf)
        S, hidden = num_particles, max(1, nf // self.reduction)
        self.mlp_down = EnsembleConv2d(S, nf, hidden, 1, bias=False)
        self.mlp_up = EnsembleConv2d(S, hidden, nf, 1, bias=False)
        self.sa_conv = EnsembleConv2d(S, 2, 1, 3, 1, 1, bias=True)

    def forward(self, x, particles, act):
        n = num_selected(particles, self.num_particles)
        B = x.shape[0]
        pooled = torch.cat((x.mean(dim=(2, 3), keepdim=True), F.adaptive_max_pool2d(x, 1)), 0)
        y = self.mlp_up(act(self.mlp_down(pooled, particles), particles), particles)
        out = x * torch.sigmoid(y[:B] + y[B:])
        op = split_particles(out, n)
        maps = torch.stack((op.mean(dim=2), op.max(dim=2).values), dim=2).flatten(1, 2)
        scale = torch.sigmoid(self.sa_conv(maps, particles)).unsqueeze(2)  # (B, n, 1, H, W)
        return (op * scale).flatten(1, 2)


class RCAB(EnsembleModule):
    """Residual channel attention block (CBAM variant): act(CBAM(BN(conv3x3(x)))) + x."""

    def __init__(self, num_particles, nf):
        super().__init__(num_particles)
        self._config = dict(nf=nf)
        S = num_particles
        self.conv = EnsembleConv2d(S, nf, nf, 3, 1, 1, bias=True)
        self.bn = EnsembleBatchNorm2d(S, nf)
        self.cbam = CBAM(S, nf)

    def forward(self, x, particles, act):
        y = self.cbam(self.bn(self.conv(x, particles), particles), particles, act)
        return act(y, particles) + x
