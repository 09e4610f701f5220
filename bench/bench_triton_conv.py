#!/usr/bin/env python
"""Can a hand-written grouped 3 x 3 convolution beat cuDNN's grouped path on the RRDB's layers?
(issue 7; a measurement prototype, not used by the package).

cuDNN runs the RRDB's grouped 48-channel convolutions at about 57 TFLOP/s on an H100 while a dense
convolution of the same chunk reaches about 395 (bench/RESULTS.md, session 4): the dense-block
convolutions alone take ~7 s of an epoch. This script holds one implicit-GEMM Triton kernel for
a grouped 3 x 3, stride 1, padding 1 convolution on NCHW activations (each program: one group,
BLOCK_M output pixels x BLOCK_N output channels, K = 9 taps x input channels), used for the
forward pass and, with the weights transposed and flipped, for the data gradient; and one
split-M kernel for the weight gradient (fp32 atomics). It checks all three against
torch's grouped convolution, then times forward and forward + backward of the four dense-block
layers (48..192 -> 48 per particle, 72 x 180, batch 12, a chunk of particles) against cuDNN.

    PYTHONPATH=src python bench/bench_triton_conv.py --out bench/triton_conv.json      # GPU
    TRITON_INTERPRET=1 python bench/bench_triton_conv.py --check-only --device cpu     # CPU, tiny shapes

Status: checked on the CPU with Triton's interpreter (float32, tiny shapes); never run on a GPU
(no device time was left in the session that wrote it), so its speed is unknown.
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


# launch configurations the forward kernel is tuned over, per layer shape
FORWARD_CONFIGS = [dict(block_m=bm, block_k=bk, num_warps=w, num_stages=st)
                   for bm in (64, 128, 256) for bk in (16, 32) for w in (4, 8) for st in (2, 3, 4)
                   if not (bm == 256 and w == 4)]


@triton.jit
def _conv3x3_grouped_kernel(x_ptr, w_ptr, y_ptr, B, H, W, CIN, COUT,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[b, g*COUT + n, h, w] = sum_{c, ky, kx} x[b, g*CIN + c, h+ky-1, w+kx-1] * w[g*COUT + n, c, ky, kx]."""
    pid_m, pid_n, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
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
    w_base = w_ptr + (g * COUT + offs_n) * (CIN * 9)                      # (BLOCK_N,) pointers
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for tap in range(9):
        hh = h + tap // 3 - 1
        ww = w + tap % 3 - 1
        ok = m_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        pix = hh * W + ww
        for c0 in range(0, CIN, BLOCK_K):
            ck = c0 + tl.arange(0, BLOCK_K)
            k_ok = ck < CIN
            a = tl.load(x_base[:, None] + ck[None, :] * HW + pix[:, None], mask=ok[:, None] & k_ok[None, :], other=0.0)
            wt = tl.load(w_base[None, :] + ck[:, None] * 9 + tap, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
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


def _block_n(cout: int) -> int:
    return max(16, triton.next_power_of_2(cout))


def conv3x3_grouped(x, weight, groups, block_m=128, block_k=16, num_warps=4, num_stages=3):
    """Grouped 3 x 3 convolution (stride 1, padding 1, no bias) of NCHW ``x`` with ``weight``
    (groups * cout, cin, 3, 3), by the Triton kernel."""
    B, C, H, W = x.shape
    cin, cout = C // groups, weight.shape[0] // groups
    x, weight = x.contiguous(), weight.contiguous().to(x.dtype)
    y = torch.empty(B, groups * cout, H, W, device=x.device, dtype=x.dtype)
    bn = _block_n(cout)
    grid = (triton.cdiv(B * H * W, block_m), triton.cdiv(cout, bn), groups)
    kwargs = {} if x.device.type == "cpu" else dict(num_warps=num_warps, num_stages=num_stages)
    _conv3x3_grouped_kernel[grid](x, weight, y, B, H, W, cin, cout, BLOCK_M=block_m, BLOCK_N=bn,
                                  BLOCK_K=block_k, **kwargs)
    return y


def conv3x3_grouped_input_grad(dy, weight, groups, **kw):
    """Data gradient: the same kernel with each group's weights transposed and flipped."""
    gc, cin = weight.shape[:2]
    cout = gc // groups
    wt = weight.view(groups, cout, cin, 3, 3).transpose(1, 2).flip(-1, -2).reshape(groups * cin, cout, 3, 3)
    return conv3x3_grouped(dy, wt, groups, **kw)


def conv3x3_grouped_weight_grad(x, dy, groups, block_m=128, block_k=16, m_per_program=8192, num_warps=4):
    """Weight gradient (groups * cout, cin, 3, 3) in fp32, split over pixels with atomics."""
    B, C, H, W = x.shape
    cin, cout = C // groups, dy.shape[1] // groups
    dw = torch.zeros(groups * cout, cin, 3, 3, device=x.device, dtype=torch.float32)
    m_per_program = triton.cdiv(m_per_program, block_m) * block_m
    grid = (triton.cdiv(B * H * W, m_per_program), 9 * triton.cdiv(cin, block_k), groups)
    kwargs = {} if x.device.type == "cpu" else dict(num_warps=num_warps)
    _wgrad3x3_grouped_kernel[grid](x.contiguous(), dy.contiguous(), dw, B, H, W, cin, cout, m_per_program,
                                   BLOCK_M=block_m, BLOCK_N=_block_n(cout), BLOCK_K=block_k, **kwargs)
    return dw


class Conv3x3Grouped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, groups):
        ctx.save_for_backward(x, weight)
        ctx.groups = groups
        return conv3x3_grouped(x, weight, groups)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = conv3x3_grouped_input_grad(dy, weight.to(dy.dtype), ctx.groups)
        dw = conv3x3_grouped_weight_grad(x, dy, ctx.groups).to(weight.dtype)
        return dx, dw, None


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


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
                   forward=rel_err(conv3x3_grouped(x, w, groups), yr),
                   input_grad=rel_err(conv3x3_grouped_input_grad(dy, w, groups), dxr),
                   weight_grad=rel_err(conv3x3_grouped_weight_grad(x, dy, groups), dwr))
        out.append(row)
        print(f"check {row['shape']} {row['dtype']}: forward {row['forward']:.1e}, input grad "
              f"{row['input_grad']:.1e}, weight grad {row['weight_grad']:.1e}", flush=True)
    return out


def time_ms(fn, warmup=25, rep=100) -> float:
    """Median ms of ``fn`` (CUDA events, L2 flushed between runs; warm-up and repeat in ms)."""
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def tune_forward(x, w, groups) -> tuple[dict, float]:
    """Fastest launch configuration of the forward kernel for this shape (a small grid search)."""
    best = (None, float("inf"))
    for kw in FORWARD_CONFIGS:
        try:
            ms = time_ms(lambda: conv3x3_grouped(x, w, groups, **kw), warmup=5, rep=20)
        except Exception:  # e.g. out of shared memory for this configuration
            continue
        if ms < best[1]:
            best = (kw, ms)
    return best


def bench(args) -> list[dict]:
    dev = torch.device("cuda")
    H, W = (int(v) for v in args.grid.split("x"))
    B, n, nf = args.batch, args.chunk, args.features
    rows = []
    for mult in (1, 2, 3, 4):
        cin = mult * nf
        x = torch.randn(B, n * cin, H, W, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n * nf, cin, 3, 3, device=dev, dtype=torch.bfloat16) / (3 * cin ** 0.5)
        dy = torch.randn(B, n * nf, H, W, device=dev, dtype=torch.bfloat16)
        gflop = 2 * B * H * W * n * nf * cin * 9 / 1e9
        kw, _ = tune_forward(x, w, n)
        fwd_cudnn = time_ms(lambda: F.conv2d(x, w, padding=1, groups=n))
        fwd_triton = time_ms(lambda: conv3x3_grouped(x, w, n, **kw))
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

        def fb_cudnn():
            torch.autograd.grad(F.conv2d(xg, wg, padding=1, groups=n), (xg, wg), dy)

        def fb_triton():
            torch.autograd.grad(Conv3x3Grouped.apply(xg, wg, n), (xg, wg), dy)

        row = dict(layer=f"{cin}->{nf}", chunk=n, forward_config=kw, gflop_forward=gflop,
                   forward_ms_cudnn=fwd_cudnn, forward_ms_triton=fwd_triton,
                   fwd_bwd_ms_cudnn=time_ms(fb_cudnn), fwd_bwd_ms_triton=time_ms(fb_triton))
        row["forward_tflops_cudnn"] = gflop / row["forward_ms_cudnn"]
        row["forward_tflops_triton"] = gflop / row["forward_ms_triton"]
        row["fwd_bwd_tflops_cudnn"] = 3 * gflop / row["fwd_bwd_ms_cudnn"]
        row["fwd_bwd_tflops_triton"] = 3 * gflop / row["fwd_bwd_ms_triton"]
        rows.append(row)
        print(f"{row['layer']:>8} chunk {n}: forward cuDNN {fwd_cudnn:.3f} ms ({row['forward_tflops_cudnn']:.0f} "
              f"TFLOP/s), Triton {fwd_triton:.3f} ms ({row['forward_tflops_triton']:.0f}) {kw}; fwd+bwd cuDNN "
              f"{row['fwd_bwd_ms_cudnn']:.3f} ms, Triton {row['fwd_bwd_ms_triton']:.3f} ms", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--grid", default="72x180")
    ap.add_argument("--features", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=6)
    ap.add_argument("--check-only", action="store_true", help="only the correctness checks")
    ap.add_argument("--out", default="bench/triton_conv.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    if device.type == "cpu":  # Triton's interpreter: tiny shapes, float32
        checks = check(device, torch.float32, [(2, 3, 5, 4, 6, 7), (1, 2, 20, 3, 9, 5)])
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
