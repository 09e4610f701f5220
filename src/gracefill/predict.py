"""Prediction: predictive mean and standard deviations of every month from a trained ensemble.

The particles are evaluated together under inference mode; moments are accumulated month batch
by month batch, so memory stays bounded even when the particle samples are not kept.
"""
from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from gracefill.dataset import target_trend
from gracefill.months import SPLIT_FLAGS, month_flag_attrs, month_flags, split_attrs
from gracefill.train import INPUT_DIMS, build_engine, resolve_device


def reconstruct(ds: xr.Dataset, checkpoint: dict, cfg: dict, *, save_samples: bool = False,
                progress: bool = True, ranks=None) -> xr.Dataset:
    """Reconstruction of every month of the tensors ``ds``, trend added back, land only.

    ``ranks`` (a :class:`gracefill.distributed.Ranks`): the particles are sharded over the
    process group, each rank predicts its own and every rank gets all of them (rank 0 writes)."""
    from tqdm.auto import tqdm

    device = resolve_device(cfg["training"]["device"]) if ranks is None else ranks.device
    settings = checkpoint["model"]
    grid = [ds.sizes["lat"], ds.sizes["lon"]]
    if list(settings["grid"]) != grid or settings["in_channels"] != ds.sizes["channel"]:
        raise ValueError(f"the model was trained on a {settings['grid']} grid with {settings['in_channels']} channels, "
                         f"the tensors have {grid} and {ds.sizes['channel']}")
    if ranks is None:
        engine = build_engine(settings, cfg, num_train=1, device=device, compile_network=cfg["prediction"]["compile"])
    else:
        from gracefill.distributed import build_sharded_engine

        engine = build_sharded_engine(settings, cfg, 1, ranks, same_init=False,
                                      compile_network=cfg["prediction"]["compile"])
    engine.load_state_dict(checkpoint["engine"])

    inputs = torch.as_tensor(ds["inputs"].transpose(*INPUT_DIMS).values, dtype=torch.float32)
    n_months, s = inputs.shape[0], settings["particles"]
    mean = np.empty((n_months, *grid), dtype=np.float32)
    epistemic = np.empty_like(mean)
    samples = np.empty((s, n_months, *grid), dtype=np.float32) if save_samples else None
    batch = int(cfg["prediction"]["batch_size"])
    for start in tqdm(range(0, n_months, batch), desc="predict", unit="batch", disable=not progress):
        x = inputs[start:start + batch].to(device)
        outputs = engine.predict(x)[:, :, 0].float()
        mean[start:start + batch] = outputs.mean(0).cpu().numpy()
        epistemic[start:start + batch] = outputs.var(0, correction=0).cpu().numpy()
        if samples is not None:
            samples[:, start:start + batch] = outputs.cpu().numpy()
    log_beta = engine.all_log_beta().double().cpu().numpy()
    aleatoric = float(np.mean(np.exp(-log_beta)))

    units = ds["target"].attrs.get("units", "cm")
    land = ds["land_mask"].astype(bool)
    trend = target_trend(ds)
    dims = ("time", "lat", "lon")

    def field(values, long_name, unit=units, **attrs):
        return xr.DataArray(values, dims=dims, coords={"time": ds["time"], "lat": ds["lat"], "lon": ds["lon"]}
                            ).where(land).astype(np.float32).assign_attrs(long_name=long_name, units=unit, **attrs)

    std_epi = np.sqrt(epistemic)
    std_total = np.sqrt(epistemic + aleatoric)
    out = xr.Dataset({
        "twsa": field(mean + trend.values, "reconstructed terrestrial water storage anomaly (predictive mean, trend added back)"),
        "twsa_std": field(std_total, "total predictive standard deviation"),
        "twsa_std_epistemic": field(std_epi, "epistemic standard deviation (spread of the particles)"),
        "twsa_std_aleatoric": field(np.full_like(mean, np.sqrt(aleatoric)), "aleatoric standard deviation (mean noise of the particles)"),
        "trend": field(trend.values, "trend of the target fitted on the training months"),
        "split": ds["split"].assign_attrs(dict(split_attrs(), units="1")),
        "month_flag": xr.DataArray(_month_flags(ds), dims="time", attrs=dict(month_flag_attrs(), units="1")),
        "observed_twsa": field((ds["target"] + trend).values, "GRACE TWSA where observed (trend added back)"),
        "log_beta": xr.DataArray(log_beta.astype(np.float32), dims="particle", attrs={
            "long_name": f"natural logarithm of the noise precision of each particle (precision in {units}-2)",
            "units": "1"}),
    })
    if samples is not None:
        out["twsa_samples"] = xr.DataArray(samples + trend.values[None], dims=("particle", *dims),
                                           coords={"time": ds["time"], "lat": ds["lat"], "lon": ds["lon"]}
                                           ).where(land).astype(np.float32).assign_attrs(
            long_name="particle predictions (trend added back)", units=units)
    if "truth" in ds:
        out["truth"] = ds["truth"]
    out.attrs.update({"title": "gracefill reconstruction", "particles": s, "backbone": settings["backbone"],
                      "epochs_trained": int(checkpoint["epoch"]), "target_units": units,
                      **({"train_window": ds.attrs["train_window"]} if "train_window" in ds.attrs else {}),
                      "comment": "twsa_std**2 = twsa_std_epistemic**2 + twsa_std_aleatoric**2"})
    return out


def _month_flags(ds: xr.Dataset) -> np.ndarray:
    """MONTH_FLAGS of every month: observed, missing, in the gap between the missions, or before
    (hindcast) or after (forecast) the GRACE record."""
    return month_flags(ds["observed"].values.astype(bool), ds["split"].values == SPLIT_FLAGS["gap"])
