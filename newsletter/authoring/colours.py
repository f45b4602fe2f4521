"""Which colour is drawn on which in the email, and whether people can read it.

The email template draws text in a few fixed pairs (body text on the
section background, links on it, white on the header band, small print on
the page background); ``contrast_problems`` measures each pair in the light
and the dark scheme against WCAG AA, 4.5:1 for normal text.
"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.authoring.issue import Colours, Publication

WCAG_AA = 4.5
WHITE = "#ffffff"


@dataclass(frozen=True)
class Pair:
    what: str  # "body text", for messages
    foreground: str  # a Colours field, or "white"
    background: str  # a Colours field


# As the templates draw them (templates/email/layout.mjml.j2). The header band
# is the light scheme's primary colour in both schemes.
PAIRS = (
    Pair("body text", "text", "surface"),
    Pair("links and headings", "primary", "surface"),
    Pair("the small print", "text", "background"),
    Pair("links in the small print", "primary", "background"),
)
BAND = Pair("the title on the header band", "white", "primary")


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance of "#rgb" or "#rrggbb"."""
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(one: str, other: str) -> float:
    """The WCAG contrast ratio of two colours, from 1 to 21."""
    lighter, darker = sorted((relative_luminance(one), relative_luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@dataclass(frozen=True)
class LowContrast:
    scheme: str  # "light", "dark" or "both"
    group: str  # "colours" or "dark_colours": where the colours are set
    pair: Pair
    foreground: str
    background: str
    ratio: float

    def describe(self) -> str:
        schemes = "in both schemes" if self.scheme == "both" else f"in the {self.scheme} scheme"
        return (f"{schemes}, {self.pair.what} ({self.foreground} on {self.background}) "
                f"has a contrast of {self.ratio:.2f}:1; WCAG AA asks for at least {WCAG_AA}:1")


def low_contrast(publication: Publication) -> list[LowContrast]:
    """Each pair the email draws that misses WCAG AA, in either scheme."""
    found = []
    schemes = (("light", "colours", publication.colours), ("dark", "dark_colours", publication.dark_colours))
    for scheme, group, colours in schemes:
        for pair in PAIRS:
            found += _measure(scheme, group, pair, colours)
    found += _measure("both", "colours", BAND, publication.colours)
    return found


def _measure(scheme: str, group: str, pair: Pair, colours: Colours) -> list[LowContrast]:
    foreground = WHITE if pair.foreground == "white" else getattr(colours, pair.foreground)
    background = getattr(colours, pair.background)
    ratio = contrast(foreground, background)
    return [LowContrast(scheme, group, pair, foreground, background, ratio)] if ratio < WCAG_AA else []
