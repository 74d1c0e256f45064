"""Regenerates the README gallery: one small PNG per experiment in docs/gallery/.

Every experiment that ``python -m experiments --list`` knows is drawn, in run order; none
is listed here by name, so a new experiment joins the gallery once its results exist.

    .venv/bin/python scripts/gallery.py                      # draw from docs/results/quick
    .venv/bin/python scripts/gallery.py --out outputs/quick  # copy a run's figures instead

By default each figure is drawn again by the experiment's own ``plot`` from the committed
results (``docs/results/quick/NAME.json``, the files the README's numbers come from), so
no experiment runs. ``--out`` takes the figures of a finished run (``bash scripts/run.sh``)
as they are. An experiment without results or figure is left out with a message naming
it and how to make it (``--strict``: exit status 1). Afterwards the README's gallery
table (the ``results:gallery`` block) is rewritten by ``scripts/readme_numbers.py`` to
show exactly the pictures in docs/gallery/.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
GALLERY = ROOT / "docs" / "gallery"
RESULTS = ROOT / "docs" / "results" / "quick"


def shrink(source: pathlib.Path, name: str, width: int) -> None:
    image = Image.open(source).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    tmp = GALLERY / f".{name}.png.tmp"
    image.save(tmp, format="PNG", optimize=True)
    tmp.replace(GALLERY / f"{name}.png")
    print(f"docs/gallery/{name}.png {image.width}x{image.height}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS,
                        help="draw each figure from RESULTS/NAME.json (default "
                             "docs/results/quick)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="copy OUT/figures/NAME.png of a finished run instead of drawing")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when an experiment has no results or figure")
    args = parser.parse_args(argv)

    from experiments import _framework

    GALLERY.mkdir(parents=True, exist_ok=True)
    missing = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, experiment in _framework.discover().items():
            if args.out is not None:
                source = _framework.figure_path(args.out, name)
                if not source.exists():
                    missing.append(f"{name}: no {source} (python -m experiments {name})")
                    continue
            else:
                results = args.results / f"{name}.json"
                if not results.exists():
                    missing.append(f"{name}: no {results} (python -m experiments {name}, "
                                   "then scripts/readme_numbers.py --copy-from outputs/quick)")
                    continue
                source = pathlib.Path(scratch) / f"{name}.png"
                experiment.plot(json.loads(results.read_text())["result"], source)
            shrink(source, name, args.width)
    for line in missing:
        print(f"not in the gallery: {line}", file=sys.stderr)

    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_numbers",
                                                  ROOT / "scripts" / "readme_numbers.py")
    readme_numbers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme_numbers)
    status = readme_numbers.main([])
    return 1 if (missing and args.strict) or status else 0


if __name__ == "__main__":
    sys.exit(main())
