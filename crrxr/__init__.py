"""crrxr: out-of-core CRR and Shepard data cubes from IFU row-stacked spectra."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crrxr")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "build_cube"]


def build_cube(*args, **kwargs):
    """Build a cube from an RSS store; see :func:`crrxr.engine.build.build_cube`."""
    from crrxr.engine.build import build_cube as _build_cube

    return _build_cube(*args, **kwargs)
