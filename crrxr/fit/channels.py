"""The per-sample inputs of selected cube channels, read from the cube's RSS exactly as the engine
reads them (:func:`crrxr.engine.chunk.read_rss_slice`, seeing from :func:`crrxr.core.kernel.seeing_at`),
and the weights of those channels (:mod:`crrxr.core.weights`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import xarray as xr

from crrxr.core.weights import ChannelWeights, iter_channel_weights
from crrxr.engine import settings
from crrxr.engine.chunk import read_rss_slice, sample_seeing
from crrxr.engine.store import rss_identity
from crrxr.io.cube_reader import CubeView
from crrxr.io.rss import open_rss


@dataclass(frozen=True)
class ChannelInputs:
    """Per-sample arrays (n_samples, n_chan) of the channels ``index`` (into ``wavelength``).

    xpos, ypos: arcsec; fwhm: seeing FWHM (arcsec) at each sample and channel; flux per fiber; ivar;
    mask: RSS bits. wavelength: (n_chan,) Angstrom.
    """

    index: np.ndarray
    wavelength: np.ndarray
    xpos: np.ndarray
    ypos: np.ndarray
    fwhm: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray

    def variance(self) -> np.ndarray:
        """1 / ivar (n_samples, n_chan); 0 where ivar is 0 (such samples never enter a solve)."""
        return np.divide(1.0, self.ivar, out=np.zeros_like(self.ivar), where=self.ivar > 0)


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous [start, stop) runs of sorted channel indices."""
    runs, start = [], int(index[0])
    for a, b in zip(index[:-1], index[1:]):
        if b != a + 1:
            runs.append((start, int(a) + 1))
            start = int(b)
    runs.append((start, int(index[-1]) + 1))
    return runs


def check_rss_matches(cube: CubeView, rss_path: str | os.PathLike[str]) -> xr.Dataset:
    """The RSS at ``rss_path`` (validated), after checking it is the one the cube was built from."""
    rss = open_rss(os.fspath(rss_path), check_data=False)
    want = cube.rss_identity.get("sha256")
    if want is not None and rss_identity(rss)["sha256"] != want:
        raise ValueError(
            f"{rss_path} is not the RSS {cube.path} was built from (its identity differs); "
            "pass the RSS given to `crrxr build`"
        )
    return rss


def read_channels(
    cube: CubeView, rss_path: str | os.PathLike[str], channels: np.ndarray
) -> ChannelInputs:
    """Inputs of the cube channels ``channels`` (sorted, unique indices), sky-subtracted like the
    build when ``sky.enabled``."""
    idx = np.unique(np.asarray(channels, dtype=np.int64))
    if idx.size == 0:
        raise ValueError("no channels selected")
    n = cube.dataset.sizes["wavelength"]
    if idx[0] < 0 or idx[-1] >= n:
        raise ValueError(f"channel indices must lie in 0..{n - 1}")
    p = cube.params
    sky = str(p["sky.method"]) if bool(p["sky.enabled"]) else None
    parts = [read_rss_slice(os.fspath(rss_path), a, b, sky) for a, b in _runs(idx)]
    part = (
        parts[0]
        if len(parts) == 1
        else xr.concat(
            parts, dim="wavelength", data_vars="minimal", coords="minimal", compat="override"
        )
    )
    wave = part["wavelength"].values
    fwhm = sample_seeing(part, float(p["seeing.lambda_ref_angstrom"]), float(p["seeing.exponent"]))
    return ChannelInputs(
        idx,
        wave,
        part["xpos"].values,
        part["ypos"].values,
        fwhm,
        part["flux"].values,
        part["ivar"].values,
        part["mask"].values,
    )


def channel_weights(cube: CubeView, inputs: ChannelInputs) -> list[ChannelWeights]:
    """The weights of each channel of ``inputs`` on the cube's grid with the cube's parameters."""
    config = settings.core_config(cube.params)
    return list(
        iter_channel_weights(
            inputs.xpos,
            inputs.ypos,
            inputs.fwhm,
            inputs.flux,
            inputs.ivar,
            inputs.mask,
            cube.grid,
            config,
        )
    )
