"""Draw the sample publication's logo and write logo.png beside this script.

Standard library only (zlib and struct), so anyone can regenerate the file:

    python make_logo.py

The mark: three linked rings, white on NHS-style blue, for partners that
work together. ``write_png`` is reused by the issue's own picture script.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

BLUE = (0, 94, 184)
LIGHT_BLUE = (65, 182, 230)
WHITE = (255, 255, 255)


def write_png(path: Path, pixels: list[list[tuple[int, int, int]]]) -> None:
    """Write rows of (r, g, b) pixels as an 8-bit RGB PNG."""
    height, width = len(pixels), len(pixels[0])
    # Each scanline starts with filter type 0 (none).
    raw = b"".join(b"\x00" + bytes(channel for pixel in row for channel in pixel) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def logo_pixel(x: int, y: int, size: int) -> tuple[int, int, int]:
    centre = size / 2
    radius = size * 0.2
    rings = [(centre + radius * math.cos(a), centre + radius * math.sin(a))
             for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    for rx, ry in rings:
        distance = math.hypot(x + 0.5 - rx, y + 0.5 - ry)
        if abs(distance - radius) < size * 0.035:
            return WHITE
    if math.hypot(x + 0.5 - centre, y + 0.5 - centre) < size * 0.06:
        return LIGHT_BLUE
    return BLUE


def main() -> None:
    size = 192  # shown at 96 px (logo_width): two pixels per point, sharp on high-density screens
    pixels = [[logo_pixel(x, y, size) for x in range(size)] for y in range(size)]
    target = Path(__file__).with_name("logo.png")
    write_png(target, pixels)
    print(f"wrote {target.name} ({size}x{size})")


if __name__ == "__main__":
    main()
