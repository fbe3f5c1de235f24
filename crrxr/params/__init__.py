"""The parameter layer: schemas (``ParamSpec`` of ``ParamField``), immutable values
(``ParameterStore``), derived values (``DerivedResolver``), the xarray attrs codec and profiles.

Typical use::

    from crrxr.params import load_profile, reconstruction_spec, reconstruction_resolver
    spec = reconstruction_spec()
    store = load_profile("manga-127", overrides={"crr.lambda": 1e-4})
    nside = reconstruction_resolver().resolve(store, "grid.nside")
    ds.attrs.update(store.to_attrs(spec))           # two canonical JSON strings
    spec2, store2 = ParameterStore.from_attrs(ds.attrs)
"""

from .errors import (
    BoundsError,
    ChoiceError,
    CodecError,
    CycleError,
    DepthError,
    DerivedKeyError,
    DuplicateKeyError,
    FingerprintMismatchError,
    MissingContextError,
    MissingDependencyError,
    MissingKeyError,
    NonFiniteError,
    ParamError,
    ParamKeyError,
    ParamShapeError,
    ParamTypeError,
    ParamValidationError,
    ProfileError,
    ResolveError,
    SpecError,
    TransformRegistrationError,
    UnknownKeyError,
)
from .field import REQUIRED, Bounds, ParamField
from .profiles import list_profiles, load_profile, parse_set_options
from .reconstruction import (
    SYSTEM_ID,
    check_reconstruction,
    reconstruction_resolver,
    reconstruction_spec,
)
from .resolver import (
    DerivedResolver,
    check_consistency,
    pack,
    refresh_derived,
    resolvable_derived,
    strip_derived,
    unpack,
)
from .spec import ParamSpec
from .store import ParameterStore

__all__ = [
    "REQUIRED",
    "SYSTEM_ID",
    "Bounds",
    "BoundsError",
    "ChoiceError",
    "CodecError",
    "CycleError",
    "DepthError",
    "DerivedKeyError",
    "DerivedResolver",
    "DuplicateKeyError",
    "FingerprintMismatchError",
    "MissingContextError",
    "MissingDependencyError",
    "MissingKeyError",
    "NonFiniteError",
    "ParamError",
    "ParamField",
    "ParamKeyError",
    "ParamShapeError",
    "ParamSpec",
    "ParamTypeError",
    "ParamValidationError",
    "ParameterStore",
    "ProfileError",
    "ResolveError",
    "SpecError",
    "TransformRegistrationError",
    "UnknownKeyError",
    "check_consistency",
    "check_reconstruction",
    "list_profiles",
    "load_profile",
    "pack",
    "parse_set_options",
    "reconstruction_resolver",
    "reconstruction_spec",
    "refresh_derived",
    "resolvable_derived",
    "strip_derived",
    "unpack",
]
