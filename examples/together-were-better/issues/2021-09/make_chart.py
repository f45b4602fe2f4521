"""Draw this issue's vaccination chart and write vaccinations.png beside it.

Two bars to scale: 835,002 first doses and 761,532 second doses. Standard
library only; the PNG writer is the one in the publication's make_logo.py.

    python make_chart.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from make_logo import BLUE, LIGHT_BLUE, WHITE, write_png  # noqa: E402

DOSES = (835_002, 761_532)  # first, second
WIDTH, HEIGHT, MARGIN, BAR = 480, 120, 20, 30


def chart_pixel(x: int, y: int) -> tuple[int, int, int]:
    longest = WIDTH - 2 * MARGIN
    for index, (doses, colour) in enumerate(zip(DOSES, (BLUE, LIGHT_BLUE))):
        top = MARGIN + index * (BAR + MARGIN)
        length = round(longest * doses / max(DOSES))
        if top <= y < top + BAR and MARGIN <= x < MARGIN + length:
            return colour
    return WHITE


def main() -> None:
    pixels = [[chart_pixel(x, y) for x in range(WIDTH)] for y in range(HEIGHT)]
    target = Path(__file__).with_name("vaccinations.png")
    write_png(target, pixels)
    print(f"wrote {target.name} ({WIDTH}x{HEIGHT})")


if __name__ == "__main__":
    main()
