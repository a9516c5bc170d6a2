"""Pixel data: descriptions, codecs, transcoding, rendering and MPR (no HTTP)."""

from .codecs import (
    DECODABLE_TRANSFER_SYNTAXES,
    ENCODABLE_TRANSFER_SYNTAXES,
    decode_frame,
    decode_frame_with_info,
    encode_frame,
    frame_to_native_le,
    media_type_for_transfer_syntax,
    transfer_syntaxes_for_media_type,
)
from .description import FrameInfo, PaletteLUT, PixelDescription
from .errors import (
    DecodeError,
    EncodeError,
    NotAVolume,
    PixelError,
    RenderError,
    TranscodeError,
    UnsupportedTransferSyntax,
)
from .mpr import Reformat, reformat
from .render import render_float_image, render_frame, thumbnail
from .transcode import can_transcode, transcode_instance
from .volume import (
    SliceGeometry,
    Volume,
    VolumeCache,
    VolumeGeometry,
    build_volume_geometry,
    load_volume,
)

__all__ = [
    "DECODABLE_TRANSFER_SYNTAXES",
    "ENCODABLE_TRANSFER_SYNTAXES",
    "DecodeError",
    "EncodeError",
    "FrameInfo",
    "NotAVolume",
    "PaletteLUT",
    "PixelDescription",
    "PixelError",
    "Reformat",
    "RenderError",
    "SliceGeometry",
    "TranscodeError",
    "UnsupportedTransferSyntax",
    "Volume",
    "VolumeCache",
    "VolumeGeometry",
    "build_volume_geometry",
    "can_transcode",
    "decode_frame",
    "decode_frame_with_info",
    "encode_frame",
    "frame_to_native_le",
    "load_volume",
    "media_type_for_transfer_syntax",
    "reformat",
    "render_float_image",
    "render_frame",
    "thumbnail",
    "transcode_instance",
    "transfer_syntaxes_for_media_type",
]
