"""Ensemble-native backbones: S network replicas (SVGD particles) as one module.

Every parameter and per-particle buffer carries a leading particle axis of size S;
``forward(x, particles=None)`` maps a shared (B, Cin, H, W) batch to (S', B, Cout, H, W).
"""

from __future__ import annotations

from torch import nn

from .blocks import CBAM, DAU, RCAB, RRDB, ConvBNAct, DenseResidualBlock, UpBNAct
from .layers import (
    ACTIVATIONS,
    EnsembleActivation,
    EnsembleBatchNorm2d,
    EnsembleConv2d,
    EnsembleConvTranspose2d,
    EnsembleModule,
    particle_slice_state,
)
from .unet import CBAMUNet, RRDBUNet

BACKBONES = ("rrdb", "cbam")

__all__ = [
    "ACTIVATIONS", "BACKBONES", "CBAM", "CBAMUNet", "ConvBNAct", "DAU", "DenseResidualBlock",
    "EnsembleActivation", "EnsembleBatchNorm2d", "EnsembleConv2d", "EnsembleConvTranspose2d",
    "EnsembleModule", "RCAB", "RRDB", "RRDBUNet", "UpBNAct", "build_backbone",
    "count_parameters_per_particle", "particle_slice_state",
]


def build_backbone(name: str, in_channels: int, out_channels: int, num_particles: int,
                   features: int = 48, activation: str = "prelu",
                   channels_last: bool = False) -> nn.Module:
    """Build the ensemble U-net ``name`` ("rrdb" or "cbam", case-insensitive) of S particles.

    ``channels_last`` (default off) runs the activations in NHWC layout: same values, a
    performance knob (see bench/results/RESULTS.md for whether it pays on a given GPU).
    """
    key = name.lower() if isinstance(name, str) else name
    classes = {"rrdb": RRDBUNet, "cbam": CBAMUNet}
    if key not in classes:
        raise ValueError(f"unknown backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    return classes[key](in_channels, out_channels, num_particles, features=features,
                        activation=activation, channels_last=channels_last)


def count_parameters_per_particle(module: nn.Module) -> int:
    """Number of parameters of one particle (total numel / ``module.num_particles``)."""
    S = module.num_particles
    total = sum(p.numel() for p in module.parameters())
    if total % S:
        raise ValueError(f"{total} parameters do not split evenly over {S} particles")
    return total // S
