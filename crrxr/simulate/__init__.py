"""crrxr.simulate: synthetic IFU observations (bundles, dithers, DAR, seeing, scenes, noise, dead fibers)."""

from .rss_writer import build_observation, simulate_rss
from .scenes import Binary, Galaxy, PointSource
from .truth import read_truth

__all__ = ["Binary", "Galaxy", "PointSource", "build_observation", "read_truth", "simulate_rss"]
