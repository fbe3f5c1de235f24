"""MaNGA MANGA_DRP2PIXMASK (RSS pixel mask) bits and their mapping onto crrxr's RSS mask bits.

Bit numbers are those of ``sdssMaskbits.par`` (SDSS idlutils), group MANGA_DRP2PIXMASK, as mirrored
by the SDSS datamodel and mangadap. Bit 14 and bit 31 are not defined there.

Mapping policy (crrxr RSS bits are values; see docs/contracts.md section 2):

* ``RSS_NODATA``: NODATA (no data in the combine B-spline; ivar is 0 there anyway).
* ``RSS_DEADFIBER``: DEADFIBER (broken fiber) and NOPLUG (fiber not in the plugmap): whole spectra.
* ``RSS_REJECT``: the bits that say a sample is wrong: BADTRACE, BADFLAT, BADARC, BADPIX, COSMIC,
  LOWFLAT, FULLREJECT, COMBINEREJ, BADFLUXFACTOR and 3DREJECT (the DRP's own "reject when making the
  3D cube" summary bit).
* ``RSS_NOSKY``: NOSKY and the sky-subtraction quality bits BADSKYFIBER, BADSKYCHI, REDMONSTER.
* ``RSS_SATURATED``: no DRP2PIXMASK bit means "saturated" (saturation is folded into BADPIX /
  FULLREJECT by the DRP), so nothing maps here.
* Informational bits (mapped to nothing, kept only in the ingest provenance counts): MANYBADCOLUMNS,
  MANYREJECTED, LARGESHIFT, NEARWHOPPER, WHOPPER, SMEARIMAGE, SMEARHIGHSN, SMEARMEDSN, NEARBADPIXEL,
  PARTIALREJECT, SCATTEREDLIGHT, CROSSTALK, BRIGHTSKY. The DRP builds its cubes with these samples.

Undefined bits are bad input: :func:`map_drp2pixmask` raises unless ``allow_unknown`` is set, in
which case they map to ``RSS_REJECT`` (the conservative choice).
"""

from __future__ import annotations

import numpy as np

from crrxr.core.masks import RSS_DEADFIBER, RSS_NODATA, RSS_NOSKY, RSS_REJECT

__all__ = [
    "DRP2PIXMASK_BITS",
    "DRP2_TO_RSS",
    "DRP2_KNOWN_MASK",
    "UnknownMaskBitsError",
    "map_drp2pixmask",
    "set_bits",
]

#: MANGA_DRP2PIXMASK: name -> bit number.
DRP2PIXMASK_BITS: dict[str, int] = {
    "NOPLUG": 0,
    "BADTRACE": 1,
    "BADFLAT": 2,
    "BADARC": 3,
    "MANYBADCOLUMNS": 4,
    "MANYREJECTED": 5,
    "LARGESHIFT": 6,
    "BADSKYFIBER": 7,
    "NEARWHOPPER": 8,
    "WHOPPER": 9,
    "SMEARIMAGE": 10,
    "SMEARHIGHSN": 11,
    "SMEARMEDSN": 12,
    "DEADFIBER": 13,
    "BADPIX": 15,
    "COSMIC": 16,
    "NEARBADPIXEL": 17,
    "LOWFLAT": 18,
    "FULLREJECT": 19,
    "PARTIALREJECT": 20,
    "SCATTEREDLIGHT": 21,
    "CROSSTALK": 22,
    "NOSKY": 23,
    "BRIGHTSKY": 24,
    "NODATA": 25,
    "COMBINEREJ": 26,
    "BADFLUXFACTOR": 27,
    "BADSKYCHI": 28,
    "REDMONSTER": 29,
    "3DREJECT": 30,
}

_NODATA, _DEAD, _REJECT, _NOSKY = (
    int(RSS_NODATA),
    int(RSS_DEADFIBER),
    int(RSS_REJECT),
    int(RSS_NOSKY),
)

#: MANGA_DRP2PIXMASK name -> crrxr RSS mask value (0 = informational, not carried over).
DRP2_TO_RSS: dict[str, int] = {
    "NOPLUG": _DEAD,
    "BADTRACE": _REJECT,
    "BADFLAT": _REJECT,
    "BADARC": _REJECT,
    "MANYBADCOLUMNS": 0,
    "MANYREJECTED": 0,
    "LARGESHIFT": 0,
    "BADSKYFIBER": _NOSKY,
    "NEARWHOPPER": 0,
    "WHOPPER": 0,
    "SMEARIMAGE": 0,
    "SMEARHIGHSN": 0,
    "SMEARMEDSN": 0,
    "DEADFIBER": _DEAD,
    "BADPIX": _REJECT,
    "COSMIC": _REJECT,
    "NEARBADPIXEL": 0,
    "LOWFLAT": _REJECT,
    "FULLREJECT": _REJECT,
    "PARTIALREJECT": 0,
    "SCATTEREDLIGHT": 0,
    "CROSSTALK": 0,
    "NOSKY": _NOSKY,
    "BRIGHTSKY": 0,
    "NODATA": _NODATA,
    "COMBINEREJ": _REJECT,
    "BADFLUXFACTOR": _REJECT,
    "BADSKYCHI": _NOSKY,
    "REDMONSTER": _NOSKY,
    "3DREJECT": _REJECT,
}

DRP2_KNOWN_MASK: int = sum(1 << b for b in DRP2PIXMASK_BITS.values())


class UnknownMaskBitsError(ValueError):
    """The MASK extension sets bits that MANGA_DRP2PIXMASK does not define."""


def set_bits(value: int) -> list[int]:
    """Bit numbers set in a non-negative integer, ascending."""
    return [b for b in range(int(value).bit_length()) if value >> b & 1]


def map_drp2pixmask(
    drp_mask: np.ndarray, *, allow_unknown: bool = False, mapping: dict[str, int] | None = None
) -> np.ndarray:
    """Map a MANGA_DRP2PIXMASK array (any integer dtype, any shape) to crrxr RSS bits (u4).

    Raises :class:`UnknownMaskBitsError` naming the undefined bits (and where the first one is) unless
    ``allow_unknown``, which maps them to ``RSS_REJECT``. ``mapping`` overrides :data:`DRP2_TO_RSS`.
    """
    mapping = DRP2_TO_RSS if mapping is None else mapping
    m = np.asarray(drp_mask).astype(np.int64) & 0xFFFFFFFF  # int32 on disk: reinterpret as u32
    out = np.zeros(m.shape, dtype=np.uint32)
    for name, bit in DRP2PIXMASK_BITS.items():
        target = mapping.get(name, 0)
        if target:
            out[(m >> bit) & 1 == 1] |= np.uint32(target)
    unknown = m & ~DRP2_KNOWN_MASK
    if unknown.any():
        if not allow_unknown:
            bits = set_bits(int(np.bitwise_or.reduce(unknown, axis=None)))
            where = np.unravel_index(int(np.flatnonzero(unknown)[0]), m.shape)
            raise UnknownMaskBitsError(
                f"mask bit(s) {bits} are not defined in MANGA_DRP2PIXMASK "
                f"({int(np.count_nonzero(unknown))} samples, first at index {tuple(map(int, where))}); "
                "check that MASK really is a MaNGA DRP2PIXMASK, or allow unknown bits "
                "(--allow-unknown-mask-bits) to reject those samples"
            )
        out[unknown != 0] |= np.uint32(_REJECT)
    return out
