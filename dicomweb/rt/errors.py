"""Typed exceptions of the RT library.

Parsing functions never raise for *missing optional* attributes (they collect warnings
instead); these exceptions are for callers' mistakes and impossible requests.
"""

from __future__ import annotations


class RtError(Exception):
    """Base class of all errors raised by :mod:`dicomweb.rt`."""


class NotAnRtObject(RtError):
    """The dataset is not of the RT object family the parser was asked to read."""


class InvalidGeometry(RtError, ValueError):
    """A geometric value is unusable (e.g. a zero direction cosine or spacing)."""


class NoDoseData(RtError):
    """An RT Dose instance has no usable pixel data (e.g. a DVH-only dose object)."""


class NoRegistrationPath(RtError):
    """No chain of registrations links the two Frames of Reference."""

    def __init__(self, from_for: str, to_for: str) -> None:
        super().__init__(f"no registration path from {from_for!r} to {to_for!r}")
        self.from_for = from_for
        self.to_for = to_for
