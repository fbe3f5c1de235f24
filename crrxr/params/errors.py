"""Errors of the parameter layer: one ``ParamError(ValueError)`` base with specific subclasses.

Every message names the key (and, where there is one, the rule and the allowed range), so that the
CLI can print it as is.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ParamError(ValueError):
    """Base class of every error raised by ``crrxr.params``."""


class ParamKeyError(ParamError, KeyError):
    """A key lookup failed; also a ``KeyError`` so that mappings behave as usual."""

    __str__ = BaseException.__str__  # KeyError would repr() the message


class SpecError(ParamError):
    """A ``ParamField`` or ``ParamSpec`` is malformed (bad key, dtype, bounds, default, ...)."""


class DuplicateKeyError(SpecError):
    """The same key appears twice in one spec (or in two specs being merged)."""


class ParamValidationError(ParamError):
    """A value or a key set violates a spec; ``problems`` lists every problem found.

    The first problem decides the exception class; the message lists them all.
    """

    def __init__(self, message: str, problems: list[ParamValidationError] | None = None):
        super().__init__(message)
        self.problems: list[ParamValidationError] = problems if problems is not None else [self]


class UnknownKeyError(ParamValidationError, ParamKeyError):
    """A key is not in the spec."""

    __str__ = BaseException.__str__


class MissingKeyError(ParamValidationError, ParamKeyError):
    """A required primitive key has no value."""

    __str__ = BaseException.__str__


class DerivedKeyError(ParamValidationError):
    """A derived key was given where only primitives are allowed."""


class ParamTypeError(ParamValidationError):
    """A value has the wrong type or dtype."""


class ParamShapeError(ParamValidationError):
    """An array value has the wrong number of dimensions or the wrong length."""


class BoundsError(ParamValidationError):
    """A numeric value lies outside the field's bounds."""


class ChoiceError(ParamValidationError):
    """A string value is not one of the field's choices."""


class NonFiniteError(ParamValidationError):
    """A float value is NaN or infinite (never allowed: JSON attrs cannot carry them)."""


class CodecError(ParamError):
    """Parameter attrs cannot be decoded: missing, wrong schema, unsupported version, bad JSON."""


class FingerprintMismatchError(CodecError):
    """The spec fingerprint recorded with the values does not match the spec stored beside them."""


class ResolveError(ParamError):
    """A derived value cannot be computed."""


class CycleError(ResolveError):
    """Derived keys depend on each other in a cycle."""


class DepthError(ResolveError):
    """The dependency chain is deeper than the resolver allows."""


class MissingDependencyError(ResolveError, ParamKeyError):
    """A key has no value in the store and no registered transform."""

    __str__ = BaseException.__str__


class MissingContextError(ResolveError, ParamKeyError):
    """A transform needs a context entry (e.g. the ``wavelength`` array) that was not given."""

    __str__ = BaseException.__str__


class TransformRegistrationError(ResolveError):
    """A transform was registered twice for one key, or for a key that is not derived."""


class ProfileError(ParamError):
    """A profile or a user YAML file is malformed; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A `` (did you mean 'x'?)`` suffix for an unknown key, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def raise_problems(problems: list[ParamValidationError], header: str = "") -> None:
    """Raise the first problem's class with a message listing all of them (no-op when empty)."""
    if not problems:
        return
    first = problems[0]
    if len(problems) == 1 and not header:
        raise first
    lines = [str(p) for p in problems]
    head = header or f"{len(problems)} parameter problems"
    message = head + ":\n  - " + "\n  - ".join(lines)
    raise type(first)(message, problems)
