"""Draw examples/trigger_smiley.png: an 8x8 RGBA smiley face on a transparent background, the example trigger
of ``--trigger-image`` (the trigger image's alpha channel is its mask).

Drawn pixel by pixel from the map below so that the file is the same on every run: ``Y`` yellow face, ``K``
black eyes and mouth, ``+`` yellow at half opacity (alpha 128, the rounded rim: those pixels are blended with
the image underneath), ``.`` fully transparent (alpha 0: the image underneath shows through unchanged).

Usage: ``python examples/make_trigger.py [OUT]`` (default: trigger_smiley.png next to this script).
"""

from __future__ import annotations

import os
import pathlib
import sys

from PIL import Image

SMILEY = (
    ".+YYYY+.",
    "+YYYYYY+",
    "YYKYYKYY",
    "YYYYYYYY",
    "YKYYYYKY",
    "YYKKKKYY",
    "+YYYYYY+",
    ".+YYYY+.",
)
COLOURS = {"Y": (255, 204, 0, 255), "K": (0, 0, 0, 255), "+": (255, 204, 0, 128), ".": (0, 0, 0, 0)}


def draw_smiley() -> Image.Image:
    """The smiley as an RGBA image, one pixel per character of :data:`SMILEY`."""
    image = Image.new("RGBA", (len(SMILEY[0]), len(SMILEY)))
    for row, line in enumerate(SMILEY):
        for col, char in enumerate(line):
            image.putpixel((col, row), COLOURS[char])
    return image


def main(out: str | None = None) -> None:
    path = pathlib.Path(out) if out else pathlib.Path(__file__).with_name("trigger_smiley.png")
    tmp = path.with_name(f".{path.name}.tmp")  # written whole, then renamed: never a half-written PNG
    draw_smiley().save(tmp, format="PNG")
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
