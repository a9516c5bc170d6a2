"""Typed exceptions raised by :mod:`dicomweb.pixels`."""

from __future__ import annotations


class PixelError(Exception):
    """Base class of every error raised by the pixel library."""


class UnsupportedTransferSyntax(PixelError, ValueError):
    """The transfer syntax cannot be decoded, encoded or produced by a transcode."""

    def __init__(self, ts_uid: str, reason: str = "") -> None:
        self.ts_uid = str(ts_uid)
        self.reason = reason
        super().__init__(
            f"unsupported transfer syntax {ts_uid}" + (f": {reason}" if reason else "")
        )


class DecodeError(PixelError, ValueError):
    """The frame bytes could not be decoded with the given description."""


class EncodeError(PixelError, ValueError):
    """The pixels could not be encoded into the requested transfer syntax."""


class RenderError(PixelError, ValueError):
    """A rendered resource could not be produced (bad media type, window, viewport...)."""


class NotAVolume(PixelError, ValueError):
    """The slices do not form a volume (PS3.3 C.7.6.2 geometry is inconsistent)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TranscodeError(PixelError, ValueError):
    """The instance could not be read or written while transcoding."""
