"""Read a LOGCUBE with marvin (local file mode) and print what it read as JSON.

Run by tests/test_exports_readers.py with the .venv-marvin interpreter (marvin cannot share
crrxr's environment). Usage: python marvin_read.py FILE X Y  (spaxel x, y: 0-based array indices).
"""

import json
import sys
import warnings

warnings.simplefilter("ignore")

from marvin import config  # noqa: E402

config.mode = "local"
from marvin.tools.cube import Cube  # noqa: E402

path, x, y = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cube = Cube(filename=path)
spaxel = cube.getSpaxel(x=x, y=y, xyorig="lower", maps=False, modelcube=False)
flux = cube.flux
print(
    json.dumps(
        {
            "plateifu": cube.plateifu,
            "mangaid": cube.mangaid,
            "ra": cube.ra,
            "dec": cube.dec,
            "release": cube.release,
            "shape": list(flux.shape),
            "flux_unit": str(flux.unit),
            "flux": flux.value[:, y, x].tolist(),
            "ivar": flux.ivar[:, y, x].tolist(),
            "mask": flux.mask[:, y, x].tolist(),
            "spaxel_flux": spaxel.flux.value.tolist(),
            "dispersion": cube.dispersion.value[:, y, x].tolist(),
            "dispersion_prepixel": cube.dispersion_prepixel.value[:, y, x].tolist(),
            "specres": cube.spectral_resolution.value.tolist(),
            "wavelength": flux.wavelength.value.tolist(),
        }
    )
)
