"""The GPU benchmark (bench/bench_train.py) runs on the CPU at tiny shapes and writes its table;
the performance knobs it measures (channels-last activations, the prediction particle chunk)
give the same values as the defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gracefill.nn import build_backbone
from gracefill.nn.layers import is_channels_last, particle_cat
from gracefill.svgd import SVGD

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "bench_train.py"


def _bench_train():
    """The bench script as a module of the repository's bench/ folder (run as ``python -m bench.bench_train``)."""
    from bench import bench_train

    return bench_train


def test_bench_quick_cpu_writes_table(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--variants",
                           "fp32@all,fp32+shared@1", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("device", "torch", "config", "check", "results", "table"):
        assert key in res
    for backbone in ("rrdb", "cbam"):
        check = res["check"][backbone]
        assert check["ok"], check
        for key in ("phi_rel_err", "state_rel_err", "predict_rel_err"):
            assert check[key] < 1e-4
        r = res["results"][backbone]
        ref = r["reference"]["fp32"]
        for key in ("s_per_step", "s_per_epoch", "steps_per_epoch", "extrapolated", "peak_gb", "predict"):
            assert key in ref
        eng = r["engine"]["fp32@all"]
        for key in ("s_per_step", "s_per_epoch", "peak_gb", "host_syncs_per_step", "predict", "warmup_s"):
            assert key in eng
        assert eng["predict"]["s_total"] > 0 and eng["s_per_epoch"] > 0
    rows = {(row["backbone"], row["trainer"]) for row in res["table"]}
    assert ("rrdb", "engine fp32@all") in rows and ("cbam", "reference loop fp32") in rows
    assert ("cbam", "shared-weight bound fp32+shared@1") in rows
    bound = next(row for row in res["table"] if row["trainer"] == "shared-weight bound fp32+shared@1")
    assert bound["s_per_epoch"] > 0 and bound["predict_s"] > 0 and "speedup_epoch_vs_fp32" in bound
    speed = [row for row in res["table"] if row["trainer"] == "engine fp32@all"]
    assert all("speedup_epoch_vs_fp32" in row and "predict_speedup_vs_fp32" in row for row in speed)
    assert "| backbone" in proc.stdout
    rrdb = next(row for row in res["table"] if row["backbone"] == "rrdb" and row["trainer"] == "engine fp32@all")
    assert f"{90.4 / rrdb['s_per_epoch']:.1f}x per epoch" in proc.stdout  # against the published H100 figures


def test_bench_variant_parsing():
    bench_train = _bench_train()
    v = bench_train.parse_variant("bf16+cl+bench@5")
    assert (v.precision, v.channels_last, v.compile, v.cudnn_benchmark, v.chunk) == ("bf16", True, False, True, 5)
    assert bench_train.parse_variant("fp32@all", default_chunk=3).chunk is None
    assert bench_train.parse_variant("fp32", default_chunk=3).chunk == 3
    assert v.name == "bf16+cl+bench@5"
    with pytest.raises(SystemExit):
        bench_train.parse_variant("fp16")
    forms = bench_train.parse_variant("bf16+compile+plain+subpixel+graphs+shared@6")
    assert (forms.plain_layers, forms.subpixel, forms.cuda_graphs, forms.shared_weights) == (True, True, True, True)
    assert forms.name == "bf16+compile+plain+subpixel+graphs+shared@6"
    blocks = bench_train.parse_variant("bf16+blocks@6")
    assert (blocks.compile, blocks.compile_blocks, blocks.name) == (False, True, "bf16+blocks@6")
    refs = {"fp32": {"s_per_epoch": 9.0, "predict": {"s_total": 2.0}},
            "fp32+plain": {"s_per_epoch": 7.0, "predict": {"s_total": 3.0}},
            "bf16": {"error": "out of memory"}}
    assert bench_train.fastest_references(refs) == {"fp32": {"s_per_epoch": 7.0, "predict_s": 2.0}}


def test_shared_weight_bound_predicts_copies_and_chunks_alike():
    """The shared-weight bound gives every particle the one network's output, and a step over
    chunks of copies equals one step over all copies (repeated samples leave the BatchNorm batch
    statistics unchanged)."""
    bench_train = _bench_train()
    args = bench_train.parse_args(["--quick", "--device", "cpu"])
    args.particles = 3
    device = torch.device("cpu")
    x = torch.randn(2, args.in_channels, 8, 16)
    y = torch.randn(2, 1, 8, 16)
    mask = torch.rand(2, 1, 8, 16) > 0.3
    after = []
    for chunk in (1, None):
        bound = bench_train.SharedWeightBound(args, "cbam", device, bench_train.Variant("fp32", chunk=chunk), seed=3)
        pred = bound.predict(x)
        assert pred.shape == (3, 2, 1, 8, 16)
        with torch.no_grad():
            one = bound.net(x)[0]
        for k in range(3):
            torch.testing.assert_close(pred[k], one)
        stats = bound.step(x, y, mask)
        assert stats["n_y"] == mask.sum()
        bound.net.train()
        with torch.no_grad():
            after.append((stats["sse_mean"], bound.net(x)[0]))
    torch.testing.assert_close(after[0][0], after[1][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(after[0][1], after[1][1], rtol=1e-4, atol=1e-5)


def test_bench_layer_forms_and_prediction_batches(tmp_path):
    """Variants switch the layer forms only while they run; each prediction batch size is timed
    and the fastest is reported."""
    out = tmp_path / "forms.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--backbone", "cbam",
                           "--no-check", "--ref-variants", "fp32+plain", "--variants", "fp32+subpixel,fp32",
                           "--predict-batch", "1,2", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())["results"]["cbam"]
    assert set(res["reference"]) == {"fp32+plain"} and set(res["engine"]) == {"fp32+subpixel@all", "fp32@all"}
    for eng in res["engine"].values():
        assert [p["predict_batch"] for p in eng["predict_by_batch"]] == [1, 2]
        assert eng["predict"]["s_total"] == min(p["s_total"] for p in eng["predict_by_batch"])
    from gracefill.nn.layers import EnsembleConv2d, EnsembleConvTranspose2d
    assert EnsembleConv2d.pointwise_matmul and not EnsembleConvTranspose2d.subpixel  # defaults untouched


def test_particle_cat_keeps_layout_and_values():
    a = torch.randn(2, 3 * 4, 5, 6)
    b = torch.randn(2, 3 * 2, 5, 6)
    ref = particle_cat((a, b), 3)
    cl = particle_cat((a.contiguous(memory_format=torch.channels_last),
                       b.contiguous(memory_format=torch.channels_last)), 3)
    assert torch.equal(ref, cl)
    assert is_channels_last(cl) and ref.is_contiguous()
    assert torch.equal(ref.view(2, 3, 6, 5, 6)[:, :, :4], a.view(2, 3, 4, 5, 6))


@pytest.mark.parametrize("name", ["rrdb", "cbam"])
def test_channels_last_backbone_matches(name):
    """Same outputs, parameter gradients and BatchNorm running statistics with channels_last."""
    torch.manual_seed(0)
    plain = build_backbone(name, 5, 2, 3, features=8).double()
    fast = build_backbone(name, 5, 2, 3, features=8, channels_last=True).double()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 12, 20, dtype=torch.float64)
    for sl in (None, slice(1, 3)):
        ya, yb = plain(x, particles=sl), fast(x, particles=sl)
        assert yb.is_contiguous()
        torch.testing.assert_close(yb, ya, rtol=1e-10, atol=1e-12)
        ga = torch.autograd.grad(ya.square().sum(), list(plain.parameters()), allow_unused=True)
        gb = torch.autograd.grad(yb.square().sum(), list(fast.parameters()), allow_unused=True)
        for u, v in zip(ga, gb):
            assert (u is None) == (v is None)
            if u is not None:
                torch.testing.assert_close(v, u, rtol=1e-9, atol=1e-11)
    for (ka, va), (kb, vb) in zip(plain.state_dict().items(), fast.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(vb, va, rtol=1e-10, atol=1e-12)
    one = fast.extract_particle(1)
    assert one.channels_last
    plain.eval(), one.eval()
    torch.testing.assert_close(one(x), plain(x, particles=slice(1, 2)), rtol=1e-10, atol=1e-12)


def test_channels_last_engine_step_matches():
    """One SVGD step (chunked) with channels_last equals the default layout."""
    torch.manual_seed(1)
    plain = build_backbone("cbam", 5, 1, 3, features=8).double()
    fast = build_backbone("cbam", 5, 1, 3, features=8, channels_last=True).double()
    fast.load_state_dict(plain.state_dict())
    x, y = torch.randn(2, 5, 16, 16, dtype=torch.float64), torch.randn(2, 1, 16, 16, dtype=torch.float64)
    mask = torch.rand(2, 1, 16, 16) > 0.3
    ea = SVGD(plain, 10, particle_chunk=2, log_beta_init=1.0)
    eb = SVGD(fast, 10, particle_chunk=2, log_beta_init=1.0)
    ea.step(x, y, mask)
    eb.step(x, y, mask)
    torch.testing.assert_close(eb.theta(), ea.theta(), rtol=1e-10, atol=1e-12)


def test_predict_chunk_same_values():
    torch.manual_seed(2)
    ens = build_backbone("cbam", 5, 1, 4, features=8).double()
    x = torch.randn(2, 5, 16, 16, dtype=torch.float64)
    base = SVGD(ens, 10, particle_chunk=1, log_beta_init=1.0).predict(x)
    for chunk in (None, 2, 3, 4, 9):
        eng = SVGD(ens, 10, particle_chunk=1, predict_chunk=chunk, log_beta_init=1.0)
        torch.testing.assert_close(eng.predict(x), base, rtol=1e-12, atol=1e-12)
    assert SVGD(ens, 10, particle_chunk=1, predict_chunk=3, log_beta_init=1.0)._chunks(3) == [slice(0, 3), slice(3, 4)]
    with pytest.raises(ValueError, match="predict_chunk"):
        SVGD(ens, 10, predict_chunk=0)


def test_layer_bench_quick_cpu_writes_table(tmp_path):
    """bench/bench_layers.py: its alternative forms equal the grouped convolutions, and it writes
    one row per layer and form with the per-step extrapolation."""
    out = tmp_path / "layers.json"
    script = ROOT / "bench" / "bench_layers.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["check"]) == {"pointwise_as_matmul", "small_conv_as_unfold", "upsample_as_parity_convs"}
    assert all(err < 1e-12 for err in res["check"].values()), res["check"]
    forms = {(row["layer"], row["form"]) for row in res["rows"]}
    assert ("DAU merge 1x1 16->8", "batched matmul") in forms
    assert ("DAU spatial 3x3 2->1", "unfold + batched matmul") in forms
    assert ("dense block", "eager channels-last") in forms
    assert ("up-sampling 4x4 s2 16->8", "four 2x2 convs + pixel shuffle") in forms
    # quick mode: chunk 2 of 4 particles, so a row's per-step time is 2 chunks x its calls
    conv = next(row for row in res["rows"] if row["layer"] == "conv3x3 8->8" and row["form"] == "grouped conv")
    assert conv["ms_per_step"] == pytest.approx(conv["ms_per_call"] * 6 * 2, rel=0.01, abs=0.1)
    assert "ms/step" in proc.stdout
    fwd = subprocess.run([sys.executable, str(script), "--quick", "--device", "cpu", "--forward-only",
                          "--no-compile", "--out", str(tmp_path / "fwd.json")], capture_output=True, text=True,
                         timeout=180, cwd=ROOT)
    assert fwd.returncode == 0 and "forward only" in fwd.stdout, fwd.stdout[-2000:] + fwd.stderr[-2000:]


def test_kernel_bench_times_every_kernel_on_the_cpu(tmp_path):
    from bench import bench_kernels

    out = tmp_path / "kernels.json"
    rows = bench_kernels.main(["--features", "4", "--particles", "3", "--channels", "5", "--grid", "16", "24",
                               "--batch", "2", "--steps", "1", "--device", "cpu", "--out", str(out)])
    assert [r["kernel"] for r in rows] == list(bench_kernels.KERNELS)
    assert all(r["seconds_per_step"] > 0 for r in rows) and rows[0]["ratio_to_rbf"] == 1.0
    assert json.loads(out.read_text())["rows"][2]["kernel"] == "function"


def test_write_worlds_writes_each_worlds_config_and_prints_its_run(tmp_path):
    """bench/write_worlds.py (used by the device scripts to run worlds side by side): one config
    file a world of the benchmark override, each a whole run config, and the run names in order;
    the device scripts are valid bash."""
    import os

    import yaml

    out = tmp_path / "worlds"
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = subprocess.run([sys.executable, "bench/write_worlds.py", "configs/benchmark.yaml", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = ["reference", "short-memory", "long-memory", "no-trends", "even-noise"]
    assert result.stdout.split() == [f"benchmark-{name}" for name in names]
    assert sorted(p.stem for p in out.iterdir()) == sorted(names)
    world = yaml.safe_load((out / "long-memory.yaml").read_text())
    assert world["run"] == "benchmark-long-memory" and world["seed"] == 303
    assert world["grid"]["resolution"] == 4.0 and world["sources"]["synthetic"]["groundwater_tau_months"] == [24, 48]
    for script in ("benchmark_on_device.sh", "select_on_device.sh", "run_paper_workflow.sh", "device_site.sh",
                   "download_wheels.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "bench" / script)]).returncode == 0, script


def test_download_wheels_needs_its_folder():
    """bench/download_wheels.sh without a folder stops before any download, with its usage line."""
    result = subprocess.run(["bash", str(ROOT / "bench" / "download_wheels.sh")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "usage: bash bench/download_wheels.sh FOLDER" in result.stderr
