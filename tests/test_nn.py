"""Tests of the ensemble-native backbones (gracefill.nn)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gracefill.nn import (
    CBAMUNet,
    EnsembleBatchNorm2d,
    EnsembleConv2d,
    EnsembleConvTranspose2d,
    RRDBUNet,
    build_backbone,
    count_parameters_per_particle,
    particle_slice_state,
)
from gracefill.nn.layers import is_channels_last

VARIANTS = ("rrdb", "cbam")


def small(name, S=3, nf=8, cin=5, cout=2, activation="prelu", seed=0):
    torch.manual_seed(seed)
    return build_backbone(name, cin, cout, S, features=nf, activation=activation).double()


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("name, expected", [("rrdb", 3_608_396), ("cbam", 377_521)])
def test_parameter_counts_match_published(name, expected):
    m = build_backbone(name, 21, 1, 1, features=48)
    assert count_parameters_per_particle(m) == expected
    m = build_backbone(name, 21, 1, 1, features=48, activation="relu")
    assert count_parameters_per_particle(m) == expected - 1


def test_block_counts_and_particle_axis():
    m = build_backbone("rrdb", 21, 1, 2, features=48)
    assert count_parameters_per_particle(m.rbE1) == 662_352
    assert count_parameters_per_particle(m.skips["dua1"]) == 4_818
    assert m.num_particles == 2
    assert all(p.shape[0] == 2 for p in m.parameters())
    assert all(b.shape[0] == 2 for b in m.buffers())
    flat = torch.cat([p.reshape(2, -1) for p in m.parameters()], 1)
    assert flat.shape == (2, 3_608_396)


# ---------------------------------------------------------------- shapes and errors


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("hw", [(16, 24), (12, 20)])  # multiple of 8, and not
def test_output_shape(name, hw):
    m = small(name, S=2).float()
    with torch.no_grad():
        y = m(torch.randn(2, 5, *hw))
        assert y.shape == (2, 2, 2, *hw)
        assert y.is_contiguous()
        assert m(torch.randn(2, 5, *hw), particles=slice(1, 2)).shape == (1, 2, 2, *hw)


def test_errors():
    m = small("cbam", S=2).float()
    with pytest.raises(ValueError, match="grid 4 x 16 is too small"):
        m(torch.randn(1, 5, 4, 16))
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match="selects none"):
        m(torch.randn(1, 5, 16, 16), particles=slice(2, 3))
    with pytest.raises(TypeError):
        m(torch.randn(1, 5, 16, 16), particles=1)
    with pytest.raises(ValueError, match=r"unknown backbone 'unet'.*rrdb, cbam"):
        build_backbone("unet", 5, 1, 2)
    with pytest.raises(ValueError, match=r"unknown activation 'tanh'.*prelu, relu, silu, mish"):
        build_backbone("rrdb", 5, 1, 2, activation="tanh")


# ---------------------------------------------------------------- ensemble == per-particle loop


def _grads(module):
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("name, activation", [("rrdb", "prelu"), ("cbam", "prelu"), ("cbam", "silu")])
def test_ensemble_equals_loop(name, activation):
    S = 3
    m = small(name, S=S, activation=activation)
    x = torch.randn(3, 5, 12, 8, dtype=torch.float64)  # 12 rows: exercises the padding
    w = torch.randn(S, 3, 2, 12, 8, dtype=torch.float64)  # loss weights
    copies = [m.extract_particle(i) for i in range(S)]
    for c in copies:
        assert c.num_particles == 1 and c.training

    # train mode: batch statistics, running statistics updated, gradients
    y = m(x)
    (y * w).sum().backward()
    for i, c in enumerate(copies):
        yi = c(x)
        (yi[0] * w[i]).sum().backward()
        torch.testing.assert_close(y[i], yi[0], rtol=1e-10, atol=1e-12)
        for (name_p, p), pc in zip(m.named_parameters(), c.parameters()):
            torch.testing.assert_close(p.grad[i : i + 1], pc.grad, rtol=1e-9, atol=1e-12,
                                       msg=lambda s, n=name_p: f"{n}: {s}")
        for (name_b, b), bc in zip(m.named_buffers(), c.buffers()):
            torch.testing.assert_close(b[i : i + 1], bc, rtol=1e-10, atol=1e-12,
                                       msg=lambda s, n=name_b: f"{n}: {s}")

    # eval mode: running statistics
    m.eval()
    y = m(x)
    for i, c in enumerate(copies):
        c.eval()
        torch.testing.assert_close(y[i], c(x)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("sl", [slice(1, 3), slice(0, 3, 2)])
def test_particle_slice(name, sl):
    S = 3
    m = small(name, S=S)
    x = torch.randn(2, 5, 8, 16, dtype=torch.float64)
    bn = m.down1.bn
    before = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    with torch.no_grad():
        full = m(x)
    # the no-grad full pass above updated every particle's statistics once; undo for clarity
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, EnsembleBatchNorm2d):
                mod.running_mean.zero_(), mod.running_var.fill_(1), mod.num_batches_tracked.zero_()
    part = m(x, particles=sl)
    torch.testing.assert_close(part, full[sl], rtol=1e-10, atol=1e-12)
    part.sum().backward()
    sel = torch.zeros(S, dtype=torch.bool)
    sel[sl] = True
    # running statistics: updated for the selected particles only
    assert torch.equal(bn.running_mean[~sel], before[0][~sel])
    assert torch.equal(bn.running_var[~sel], before[1][~sel])
    assert not torch.equal(bn.running_mean[sel], before[0][sel])
    assert bn.num_batches_tracked.tolist() == sel.long().tolist()
    # gradients reach the selected rows of the full parameters only
    for p in m.parameters():
        assert p.grad.shape == p.shape
        assert torch.count_nonzero(p.grad[~sel]) == 0
    assert torch.count_nonzero(m.inc.weight.grad[sel]) > 0
    # eval mode
    m.eval()
    torch.testing.assert_close(m(x, particles=sl), m(x)[sl], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- initialisation


def test_particles_independent_and_reproducible():
    a = small("cbam", S=3, seed=7)
    b = small("cbam", S=3, seed=7)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    for n, p in a.named_parameters():
        if n.endswith("bn.weight"):
            assert torch.all(p == 1)
        elif n.endswith("bn.bias"):
            assert torch.all(p == 0)
        elif n == "act.weight":
            assert p.shape == (3, 1) and torch.all(p == 0.25)
        else:
            assert not torch.equal(p[0], p[1]), n


def test_extract_particle_copies_without_touching_rng():
    m = small("rrdb", S=3)
    state = torch.get_rng_state()
    c = m.extract_particle(2)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(c, RRDBUNet) and c.num_particles == 1
    sd = particle_slice_state(m, 2)
    assert sd.keys() == c.state_dict().keys()
    for k, v in c.state_dict().items():
        assert torch.equal(v, sd[k]) and v.dtype == m.state_dict()[k].dtype
    c.inc.weight.data.zero_()
    assert torch.count_nonzero(m.inc.weight[2]) > 0  # a copy, not a view


def test_layer_init_matches_torch_default():
    for S in (1, 3):
        torch.manual_seed(3)
        e = EnsembleConv2d(S, 6, 4, 3, bias=True)
        t = EnsembleConvTranspose2d(S, 6, 4, 4, bias=True)
        torch.manual_seed(3)
        for s in range(S):
            ref = nn.Conv2d(6, 4, 3)
            torch.testing.assert_close(e.weight[s], ref.weight, rtol=0, atol=0)
            torch.testing.assert_close(e.bias[s], ref.bias, rtol=0, atol=0)
        for s in range(S):
            ref_t = nn.ConvTranspose2d(6, 4, 4)
            torch.testing.assert_close(t.weight[s], ref_t.weight, rtol=0, atol=0)
            torch.testing.assert_close(t.bias[s], ref_t.bias, rtol=0, atol=0)


def test_layers_equal_plain_layers():
    torch.manual_seed(0)
    S, B = 3, 2
    conv = EnsembleConv2d(S, 4, 5, 3, 2, 1).double()
    tconv = EnsembleConvTranspose2d(S, 4, 5, 4, 2, 1).double()
    x = torch.randn(B, S * 4, 8, 8, dtype=torch.float64)
    yc, yt = conv(x), tconv(x)
    for s in range(S):
        xs = x[:, 4 * s : 4 * s + 4]
        torch.testing.assert_close(yc[:, 5 * s : 5 * s + 5], F.conv2d(xs, conv.weight[s], conv.bias[s], 2, 1))
        torch.testing.assert_close(yt[:, 5 * s : 5 * s + 5],
                                   F.conv_transpose2d(xs, tconv.weight[s], tconv.bias[s], 2, 1))


def test_pointwise_conv_as_matmul_equals_grouped_conv():
    """The 1 x 1 layers run as a batched matmul: values and gradients of a particle slice equal
    the grouped convolution's; a channels-last input keeps the convolution and its layout."""
    torch.manual_seed(1)
    S, B = 4, 3
    conv = EnsembleConv2d(S, 6, 5, 1, bias=True).double()
    assert conv.is_pointwise and not EnsembleConv2d(S, 6, 5, 3, 1, 1).is_pointwise
    sl = slice(1, 4)
    x = torch.randn(B, 3 * 6, 5, 7, dtype=torch.float64, requires_grad=True)
    y = conv(x, sl)
    ref = F.conv2d(x, conv.weight[sl].flatten(0, 1), conv.bias[sl].flatten(), groups=3)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    want = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert got[1][0].abs().sum() == 0  # particle 0 is not selected
    x_cl = x.detach().contiguous(memory_format=torch.channels_last)
    y_cl = conv(x_cl, sl)
    torch.testing.assert_close(y_cl, ref, rtol=1e-12, atol=1e-12)
    assert is_channels_last(y_cl)


@pytest.mark.parametrize("bias", [True, False])
def test_subpixel_upsampling_equals_transposed_conv(bias):
    """The 4 x 4 stride-2 up-sampling as 3 x 3 conv + pixel shuffle: values and gradients of a
    particle slice equal the grouped transposed convolution's (also on odd sides)."""
    torch.manual_seed(2)
    S, B = 3, 2
    up = EnsembleConvTranspose2d(S, 6, 4, 4, 2, 1, bias=bias).double()
    up.subpixel = True
    sl = slice(1, 3)
    x = torch.randn(B, 2 * 6, 5, 7, dtype=torch.float64, requires_grad=True)
    y = up(x, sl)
    b = up.bias[sl].flatten() if bias else None
    ref = F.conv_transpose2d(x, up.weight[sl].flatten(0, 1), b, stride=2, padding=1, groups=2)
    assert y.shape == ref.shape == (B, 2 * 4, 10, 14)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    params = (x, up.weight) + ((up.bias,) if bias else ())
    g = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- published architecture


class _PlainAct(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        if kind == "prelu":
            self.weight = nn.Parameter(torch.full((1,), 0.25))

    def forward(self, x):
        return F.prelu(x, self.weight) if self.kind == "prelu" else F.silu(x)


class _ConvBN(nn.Module):
    def __init__(self, conv, nf):
        super().__init__()
        self.conv, self.bn = conv, nn.BatchNorm2d(nf)


class _DAU(nn.Module):  # BCNN4GRACE models/RRDB.py: DAU
    def __init__(self, nf):
        super().__init__()
        h = max(1, nf // 24)
        self.sa_conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)
        self.ca_down = nn.Conv2d(nf, h, 1, bias=False)
        self.ca_up = nn.Conv2d(h, nf, 1, bias=False)
        self.merge = nn.Conv2d(2 * nf, nf, 1, bias=False)

    def forward(self, x, act):
        comp = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), 1)
        sa = x * torch.sigmoid(self.sa_conv(comp))
        ca = x * torch.sigmoid(self.ca_up(act(self.ca_down(F.adaptive_avg_pool2d(x, 1)))))
        return self.merge(torch.cat([sa, ca], 1)) + x


def _plain_unet(name, cin, cout, nf, act_kind):
    """Plain (single network) transcription of the published BCNN4GRACE forward graphs, with
    parameter names laid out like the ensemble's so a particle's state loads into it."""
    act = _PlainAct(act_kind)

    def cbn(i, o, stride=1):
        return _ConvBN(nn.Conv2d(i, o, 3, stride, 1), o)

    class Dense(nn.Module):
        def __init__(self):
            super().__init__()
            self.b1, self.b2, self.b3, self.b4 = (cbn(k * nf, nf) for k in (1, 2, 3, 4))
            self.dua_in, self.dua_res = _DAU(nf), _DAU(nf)

        def forward(self, x):
            inputs = x
            for b in (self.b1, self.b2, self.b3, self.b4):
                out = act(b.bn(b.conv(inputs)))
                inputs = torch.cat([inputs, out], 1)
            return self.dua_in(out, act) + self.dua_res(x, act)

    class Rrdb(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense_blocks = nn.ModuleList([Dense() for _ in range(3)])
            self.dua_in, self.dua_res = _DAU(nf), _DAU(nf)

        def forward(self, x):
            out = x
            for d in self.dense_blocks:
                out = d(out)
            return self.dua_in(out, act) + self.dua_res(x, act)

    class Cbam(nn.Module):  # models/CBAM.py: CBAM
        def __init__(self):
            super().__init__()
            h = max(1, nf // 32)
            self.mlp_down = nn.Conv2d(nf, h, 1, bias=False)
            self.mlp_up = nn.Conv2d(h, nf, 1, bias=False)
            self.sa_conv = nn.Conv2d(2, 1, 3, padding=1)

        def forward(self, x):
            mlp = lambda v: self.mlp_up(act(self.mlp_down(v)))  # noqa: E731
            out = torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1))) * x
            comp = torch.cat([torch.mean(out, 1, keepdim=True), torch.max(out, 1, keepdim=True)[0]], 1)
            return torch.sigmoid(self.sa_conv(comp)) * out

    class Rcab(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.cbam = nn.Conv2d(nf, nf, 3, 1, 1), nn.BatchNorm2d(nf), Cbam()

        def forward(self, x):
            return act(self.cbam(self.bn(self.conv(x)))) + x

    block = Rrdb if name == "rrdb" else Rcab

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = act
            self.inc = nn.Conv2d(cin, nf, 3, 2, 1)
            self.rbE1, self.down1, self.rbE2, self.down2 = block(), cbn(nf, nf, 2), block(), cbn(nf, nf, 2)
            self.rbC = block()
            self.up2, self.rbD2 = _ConvBN(nn.ConvTranspose2d(2 * nf, nf, 4, 2, 1), nf), block()
            self.up1, self.rbD1 = _ConvBN(nn.ConvTranspose2d(2 * nf, nf, 4, 2, 1), nf), block()
            self.up0 = _ConvBN(nn.ConvTranspose2d(2 * nf, nf, 4, 2, 1), nf)
            self.outc = nn.Conv2d(nf, cout, 1)
            if name == "rrdb":
                self.skips = nn.ModuleDict({f"dua{k}": _DAU(nf) for k in range(1, 6)})

        def forward(self, x):
            sk = (lambda k, v: self.skips[f"dua{k}"](v, act)) if name == "rrdb" else (lambda k, v: v)
            up = lambda u, v: act(u.bn(u.conv(v)))  # noqa: E731
            x1 = self.inc(x)
            x2 = self.rbE1(x1)
            x3 = act(self.down1.bn(self.down1.conv(x2)))
            x4 = self.rbE2(x3)
            x5 = act(self.down2.bn(self.down2.conv(x4)))
            x6 = torch.cat((self.rbC(x5), sk(5, x5)), 1)
            x8 = torch.cat((self.rbD2(up(self.up2, x6) + sk(4, x4)), sk(3, x3)), 1)
            x10 = torch.cat((self.rbD1(up(self.up1, x8) + sk(2, x2)), sk(1, x1)), 1)
            return self.outc(up(self.up0, x10))

    return Net()


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("act_kind", ["prelu", "silu"])
def test_matches_published_graph(name, act_kind):
    m = small(name, S=2, nf=8, activation=act_kind)
    plain = _plain_unet(name, 5, 2, 8, act_kind).double()
    state = particle_slice_state(m, 1)
    plain_sd = plain.state_dict()
    assert state.keys() == plain_sd.keys()
    loaded = {k: v.reshape(plain_sd[k].shape) for k, v in state.items()}
    plain.load_state_dict(loaded)
    x = torch.randn(2, 5, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(m(x)[1], plain(x), rtol=1e-10, atol=1e-12)
    m.eval(), plain.eval()
    torch.testing.assert_close(m(x)[1], plain(x), rtol=1e-10, atol=1e-12)


def test_classes_exported():
    assert isinstance(build_backbone("RRDB", 3, 1, 1, features=8), RRDBUNet)
    assert isinstance(build_backbone("cbam", 3, 1, 1, features=8), CBAMUNet)
