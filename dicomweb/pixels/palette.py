"""Segmented Palette Color Lookup Tables (PS3.3 C.7.9) expanded to plain LUTs."""

from __future__ import annotations

import numpy as np

#: Nested indirect segments followed at most (PS3.3 C.7.9.2.3 allows no nesting at all).
MAX_SEGMENT_DEPTH = 4


def expand_segmented_lut(data: bytes, bits: int, entries: int) -> bytes:
    """Segmented Palette Color LUT Data (PS3.3 C.7.9.2: discrete, linear and indirect
    segments of little-endian words) as the plain LUT of ``entries`` entries it encodes.
    Hostile data cannot make it grow: the output stops at ``entries`` values."""
    width = 1 if bits == 8 else 2
    words = np.frombuffer(bytes(data[: len(data) - len(data) % width]),
                          dtype="<u1" if width == 1 else "<u2").tolist()
    out: list[int] = []

    def expand(start: int, segments: int | None, depth: int) -> None:
        offset, done = start, 0
        while offset + 1 < len(words) and len(out) < entries:
            opcode, length = words[offset], words[offset + 1]
            offset += 2
            if opcode == 0:  # discrete: `length` values follow
                out.extend(words[offset : offset + min(length, entries - len(out))])
                offset += length
            elif opcode == 1 and offset < len(words):  # linear: from the last value to y1
                y0, y1 = (out[-1] if out else words[offset]), words[offset]
                offset += 1
                count = min(length, entries - len(out))
                out.extend(round(y0 + (y1 - y0) * (k + 1) / length) for k in range(count))
            elif opcode == 2 and offset + 1 < len(words) and depth < MAX_SEGMENT_DEPTH:
                if width == 1:  # the byte offset is split over four 8-bit words
                    target = (words[offset + 1] << 8 | words[offset]) | (
                        (words[offset + 3] << 8 | words[offset + 2]) << 16
                        if offset + 3 < len(words) else 0)
                    offset += 4
                else:
                    target = words[offset] | words[offset + 1] << 16
                    offset += 2
                expand(target // width, length, depth + 1)
            else:
                return  # unknown segment type or truncated data: keep what is complete
            done += 1
            if segments is not None and done >= segments:
                return

    expand(0, None, 0)
    return np.asarray(out, dtype="<u1" if width == 1 else "<u2").tobytes()
