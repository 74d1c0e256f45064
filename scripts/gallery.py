"""Regenerates the README gallery: small PNGs in docs/gallery/ from a main-job output folder.

Usage (after `bash scripts/run.sh`, which writes outputs/quick):

    .venv/bin/python scripts/gallery.py [--out outputs/quick] [--width 900]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
GALLERY = (
    "estimator_table",
    "estimator_sweep",
    "forward_vs_reverse_1d",
    "forward_vs_reverse_2d",
    "separation_sweep",
    "gradient_audit",
    "toy_grpo",
    "grpo_transformer",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "outputs" / "quick")
    parser.add_argument("--width", type=int, default=900)
    args = parser.parse_args()
    missing = [n for n in GALLERY if not (args.out / "figures" / f"{n}.png").exists()]
    if missing:
        parser.error(f"figures missing in {args.out}: {missing}; run scripts/run.sh first")
    target = ROOT / "docs" / "gallery"
    target.mkdir(parents=True, exist_ok=True)
    for name in GALLERY:
        image = Image.open(args.out / "figures" / f"{name}.png").convert("RGB")
        if image.width > args.width:
            image = image.resize((args.width, round(image.height * args.width / image.width)),
                                 Image.LANCZOS)
        tmp = target / f".{name}.png.tmp"
        image.save(tmp, format="PNG", optimize=True)
        tmp.replace(target / f"{name}.png")
        print(f"docs/gallery/{name}.png {image.width}x{image.height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
