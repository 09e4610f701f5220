#!/usr/bin/env python
"""Can a hand-written grouped 3 x 3 convolution beat cuDNN's grouped path on the RRDB's layers?
(issue 7; a measurement prototype, not used by the package).

One implicit-GEMM Triton kernel for a grouped 3 x 3, stride 1, padding 1 convolution on NCHW
activations (each program: one group, BLOCK_M output pixels x BLOCK_N output channels, K = 9 taps
x input channels in one flat loop over weights packed K-major), used for the forward pass and,
with the weights transposed and flipped, for the data gradient; and one split-pixel kernel for
the weight gradient (fp32 atomics). It checks all three against torch's grouped convolution,
then tunes each pass's launch configuration per layer and times forward, data gradient, weight
gradient and forward + backward of the four dense-block layers (48..192 -> 48 per particle,
72 x 180, batch 12, a chunk of particles, bf16) against cuDNN.

    python -m bench.bench_triton_conv --out bench/results/triton_conv.json      # GPU
    TRITON_INTERPRET=1 python -m bench.bench_triton_conv --check-only --device cpu     # CPU, tiny shapes

Outcome on an H100 (bench/results/RESULTS.md, round 5 of 2026-11-25): forward and data gradient 0.94-1.34x cuDNN's
speed, the weight gradient 4-6x slower; not worth wiring into the package.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
import triton.testing
from bench.bench_cudnn_grouped import dense_block_layers  # the same four layers


# launch configurations searched per layer shape: (block_m, block_n, block_k, num_warps); the
# pipeline depth is searched afterwards around the best of these
CONV_CONFIGS = [dict(block_m=bm, block_n=bn, block_k=bk, num_warps=w)
                for bm in (64, 128) for bn in (16, 32, 64, 128) for bk in (16, 32) for w in (4, 8)
                if not (bm * bn <= 1024 and w == 8)]
STAGES = (2, 3, 4, 5)
WGRAD_CONFIGS = [dict(block_m=bm, block_k=bk, m_per_program=mp, num_warps=w)
                 for bm in (64, 128, 256) for bk in (16, 32) for mp in (4096, 16384) for w in (4, 8)]


@triton.jit
def _conv3x3_grouped_kernel(x_ptr, w_ptr, y_ptr, B, H, W, CIN, COUT,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[b, g*COUT + n, h, w] = sum_{tap, c} x[b, g*CIN + c, h+ky-1, w+kx-1] * w[g, tap, c, n],
    tap = 3 ky + kx; one program: BLOCK_M output pixels x BLOCK_N output channels of one group,
    K = 9 taps x CIN input channels in one flat (pipelined) loop."""
    pid_n, pid_m, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # n fastest: A tile reuse in L2
    HW = H * W
    G = tl.num_programs(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < B * HW
    n_ok = offs_n < COUT
    b = offs_m // HW
    hw = offs_m % HW
    h = hw // W
    w = hw % W
    x_base = x_ptr + (b * (G * CIN) + g * CIN) * HW                       # (BLOCK_M,) pointers
    w_base = w_ptr + g * (9 * CIN * COUT) + offs_n                        # (BLOCK_N,) pointers
    k_blocks = tl.cdiv(CIN, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, 9 * k_blocks):
        tap = kk // k_blocks
        ck = (kk % k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = ck < CIN
        hh = h + tap // 3 - 1
        ww = w + tap % 3 - 1
        ok = m_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        a = tl.load(x_base[:, None] + ck[None, :] * HW + (hh * W + ww)[:, None],
                    mask=ok[:, None] & k_ok[None, :], other=0.0)
        wt = tl.load(w_base[None, :] + (tap * CIN + ck)[:, None] * COUT,
                     mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += tl.dot(a, wt)
    y_ptrs = y_ptr + (b * (G * COUT) + g * COUT)[:, None] * HW + offs_n[None, :] * HW + hw[:, None]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _wgrad3x3_grouped_kernel(x_ptr, dy_ptr, dw_ptr, B, H, W, CIN, COUT, M_PER_PROGRAM,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """dw[g*COUT + n, c, tap] += sum over this program's pixels of dy[m, n] * x[m shifted by tap, c] (fp32)."""
    pid_split, pid_kc, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    G = tl.num_programs(2)
    HW = H * W
    tap = pid_kc % 9
    c0 = (pid_kc // 9) * BLOCK_K
    offs_n = tl.arange(0, BLOCK_N)
    ck = c0 + tl.arange(0, BLOCK_K)
    n_ok = offs_n < COUT
    k_ok = ck < CIN
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    m_start = pid_split * M_PER_PROGRAM
    for m0 in range(m_start, m_start + M_PER_PROGRAM, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < B * HW
        b = offs_m // HW
        hw = offs_m % HW
        h = hw // W
        w = hw % W
        hh = h + tap // 3 - 1
        ww = w + tap % 3 - 1
        ok = m_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        dy = tl.load(dy_ptr + (b * (G * COUT) + g * COUT)[None, :] * HW + offs_n[:, None] * HW + hw[None, :],
                     mask=n_ok[:, None] & m_ok[None, :], other=0.0)              # (BLOCK_N, BLOCK_M)
        xs = tl.load(x_ptr + (b * (G * CIN) + g * CIN)[:, None] * HW + ck[None, :] * HW + (hh * W + ww)[:, None],
                     mask=ok[:, None] & k_ok[None, :], other=0.0)                # (BLOCK_M, BLOCK_K)
        acc += tl.dot(dy, xs)
    dw_ptrs = dw_ptr + (g * COUT + offs_n)[:, None] * (CIN * 9) + ck[None, :] * 9 + tap
    tl.atomic_add(dw_ptrs, acc, mask=n_ok[:, None] & k_ok[None, :])


def _pack(weight, groups, flip=False):
    """(groups * cout, cin, 3, 3) -> (groups, 9, cin, cout), the kernel's K-major weight layout; with
    ``flip`` the data-gradient weights (groups, 9, cout, cin): taps mirrored, in/out swapped."""
    gc, cin = weight.shape[:2]
    w = weight.view(groups, gc // groups, cin, 3, 3)
    if flip:
        return w.flip(-1, -2).permute(0, 3, 4, 1, 2).reshape(groups, 9, gc // groups, cin).contiguous()
    return w.permute(0, 3, 4, 2, 1).reshape(groups, 9, cin, gc // groups).contiguous()


def _conv_packed(x, wp, groups, block_m=128, block_n=64, block_k=16, num_warps=4, num_stages=3):
    B, C, H, W = x.shape
    cin, cout = wp.shape[2], wp.shape[3]
    assert C == groups * cin, (x.shape, wp.shape, groups)
    x = x.contiguous()
    y = torch.empty(B, groups * cout, H, W, device=x.device, dtype=x.dtype)
    block_n = min(block_n, max(16, triton.next_power_of_2(cout)))
    grid = (triton.cdiv(cout, block_n), triton.cdiv(B * H * W, block_m), groups)
    kwargs = {} if x.device.type == "cpu" else dict(num_warps=num_warps, num_stages=num_stages)
    _conv3x3_grouped_kernel[grid](x, wp.to(x.dtype), y, B, H, W, cin, cout, BLOCK_M=block_m, BLOCK_N=block_n,
                                  BLOCK_K=block_k, **kwargs)
    return y


def conv3x3_grouped(x, weight, groups, **kw):
    """Grouped 3 x 3 convolution (stride 1, padding 1, no bias) of NCHW ``x`` with ``weight``
    (groups * cout, cin, 3, 3), by the Triton kernel; ``kw``: launch configuration."""
    return _conv_packed(x, _pack(weight, groups), groups, **kw)


def conv3x3_grouped_input_grad(dy, weight, groups, **kw):
    """Data gradient: the same kernel with each group's weights transposed and flipped."""
    return _conv_packed(dy, _pack(weight, groups, flip=True), groups, **kw)


def conv3x3_grouped_weight_grad(x, dy, groups, block_m=128, block_k=16, m_per_program=8192, num_warps=4):
    """Weight gradient (groups * cout, cin, 3, 3) in fp32, split over pixels with atomics."""
    B, C, H, W = x.shape
    cin, cout = C // groups, dy.shape[1] // groups
    dw = torch.zeros(groups * cout, cin, 3, 3, device=x.device, dtype=torch.float32)
    m_per_program = triton.cdiv(m_per_program, block_m) * block_m
    grid = (triton.cdiv(B * H * W, m_per_program), 9 * triton.cdiv(cin, block_k), groups)
    kwargs = {} if x.device.type == "cpu" else dict(num_warps=num_warps)
    _wgrad3x3_grouped_kernel[grid](x.contiguous(), dy.contiguous(), dw, B, H, W, cin, cout, m_per_program,
                                   BLOCK_M=block_m, BLOCK_N=max(16, triton.next_power_of_2(cout)),
                                   BLOCK_K=block_k, **kwargs)
    return dw


class Conv3x3Grouped(torch.autograd.Function):
    """The three kernels as one differentiable op; ``configs``: launch configurations by pass
    (keys forward, input_grad, weight_grad; missing ones take the defaults)."""

    @staticmethod
    def forward(ctx, x, weight, groups, configs=None):
        ctx.save_for_backward(x, weight)
        ctx.groups, ctx.configs = groups, configs or {}
        return conv3x3_grouped(x, weight, groups, **ctx.configs.get("forward", {}))

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        cfg = ctx.configs
        dx = conv3x3_grouped_input_grad(dy, weight, ctx.groups, **cfg.get("input_grad", {}))  # cast to dy's dtype
        dw = conv3x3_grouped_weight_grad(x, dy, ctx.groups, **cfg.get("weight_grad", {})).to(weight.dtype)
        return dx, dw, None, None


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


TILINGS = (dict(), dict(block_m=16, block_n=16, block_k=16))  # the default tiles, and ragged small ones


def check(device, dtype, shapes) -> list[dict]:
    """Forward, data and weight gradients against torch's grouped convolution (fresh random inputs)."""
    out = []
    for B, groups, cin, cout, H, W in shapes:
        x = torch.randn(B, groups * cin, H, W, device=device, dtype=dtype)
        w = torch.randn(groups * cout, cin, 3, 3, device=device, dtype=dtype) / (3 * cin ** 0.5)
        dy = torch.randn(B, groups * cout, H, W, device=device, dtype=dtype)
        xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
        yr = F.conv2d(xr, wr, padding=1, groups=groups)
        dxr, dwr = torch.autograd.grad(yr, (xr, wr), dy.double())
        row = dict(shape=[B, groups, cin, cout, H, W], dtype=str(dtype).replace("torch.", ""),
                   forward=max(rel_err(conv3x3_grouped(x, w, groups, **kw), yr) for kw in TILINGS),
                   input_grad=max(rel_err(conv3x3_grouped_input_grad(dy, w, groups, **kw), dxr) for kw in TILINGS),
                   weight_grad=rel_err(conv3x3_grouped_weight_grad(x, dy, groups), dwr))
        out.append(row)
        print(f"check {row['shape']} {row['dtype']}: forward {row['forward']:.1e}, input grad "
              f"{row['input_grad']:.1e}, weight grad {row['weight_grad']:.1e}", flush=True)
    return out


def time_ms(fn, warmup=25, rep=100) -> float:
    """Median ms of ``fn`` (CUDA events, L2 flushed between runs; warm-up and repeat in ms)."""
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def tune(run, configs) -> tuple[dict, float]:
    """Fastest of ``configs`` for ``run(**config)`` (configurations that fail to launch are skipped)."""
    best = (None, float("inf"))
    for kw in configs:
        try:
            ms = time_ms(lambda: run(**kw), warmup=5, rep=20)
        except Exception:  # e.g. out of shared memory for this configuration
            continue
        if ms < best[1]:
            best = (kw, ms)
    return best


def tune_conv(run) -> tuple[dict, float]:
    """Tile shape and warps first (3 pipeline stages), then the pipeline depth for the best tile."""
    kw, _ = tune(run, [dict(c, num_stages=3) for c in CONV_CONFIGS])
    return tune(run, [dict(kw, num_stages=st) for st in STAGES])


def bench(args) -> list[dict]:
    n, nf = args.chunk, args.features
    rows = []
    for cin, x, w, dy, gflop in dense_block_layers(args, torch.device("cuda")):
        configs = dict(forward=tune_conv(lambda **kw: conv3x3_grouped(x, w, n, **kw))[0],
                       input_grad=tune_conv(lambda **kw: conv3x3_grouped_input_grad(dy, w, n, **kw))[0],
                       weight_grad=tune(lambda **kw: conv3x3_grouped_weight_grad(x, dy, n, **kw), WGRAD_CONFIGS)[0])
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        row = dict(layer=f"{cin}->{nf}", chunk=n, configs=configs, gflop_forward=gflop, ms={})
        timings = {
            "forward": (lambda: F.conv2d(x, w, padding=1, groups=n),
                        lambda: conv3x3_grouped(x, w, n, **configs["forward"])),
            "input_grad": (lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1, groups=n),
                           lambda: conv3x3_grouped_input_grad(dy, w, n, **configs["input_grad"])),
            "weight_grad": (lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=1, groups=n),
                            lambda: conv3x3_grouped_weight_grad(x, dy, n, **configs["weight_grad"])),
            "fwd_bwd": (lambda: torch.autograd.grad(F.conv2d(xg, wg, padding=1, groups=n), (xg, wg), dy),
                        lambda: torch.autograd.grad(Conv3x3Grouped.apply(xg, wg, n, configs), (xg, wg), dy)),
        }
        for name, (cudnn, tri) in timings.items():
            ms_c, ms_t = time_ms(cudnn), time_ms(tri)
            flop = gflop * (3 if name == "fwd_bwd" else 1)
            row["ms"][name] = dict(cudnn=ms_c, triton=ms_t, tflops_cudnn=flop / ms_c, tflops_triton=flop / ms_t)
            print(f"{row['layer']:>8} chunk {n} {name:>11}: cuDNN {ms_c:.3f} ms ({flop / ms_c:.0f} TFLOP/s), "
                  f"Triton {ms_t:.3f} ms ({flop / ms_t:.0f}), x{ms_c / ms_t:.2f}", flush=True)
        print(f"{row['layer']:>8} configs {configs}", flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--grid", default="72x180")
    ap.add_argument("--features", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=6)
    ap.add_argument("--check-only", action="store_true", help="only the correctness checks")
    ap.add_argument("--out", default="bench/results/triton_conv.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    if device.type == "cpu":  # Triton's interpreter: tiny shapes, float32
        checks = check(device, torch.float32, [(2, 3, 5, 4, 6, 7), (1, 2, 20, 35, 9, 5)])
    else:
        checks = check(device, torch.bfloat16, [(2, 3, 48, 48, 9, 20), (3, 6, 192, 48, 12, 18)])
    limit = 1e-5 if device.type == "cpu" else 2e-2
    ok = all(max(c["forward"], c["input_grad"], c["weight_grad"]) < limit for c in checks)
    print(f"checks {'OK' if ok else 'FAILED'} (relative L2 error < {limit:g})", flush=True)
    out = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)",
               torch=torch.__version__, triton=triton.__version__, checks=checks, ok=ok, rows=[])
    if ok and not args.check_only and device.type == "cuda":
        t0 = time.perf_counter()
        out["rows"] = bench(args)
        out["bench_s"] = time.perf_counter() - t0
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
