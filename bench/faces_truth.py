"""Draw the sample's face truth (tests/data/faces-truth.json) over its images, so a person can check it.

    python bench/faces_truth.py --overlays /tmp/truth            # one JPEG per image + truth-sheet.png
    python bench/faces_truth.py --overlays /tmp/truth --crops work/crops.parquet   # a crop run's faces too

Truth boxes are yellow (dashed-looking orange when ambiguous); with --crops, the faces of that crops
table are drawn in cyan, so the truth and a run can be compared at a glance. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT.parent / "shared" / "data" / "danbooru-sample"
_YELLOW, _ORANGE, _CYAN = (255, 230, 0), (255, 140, 0), (0, 230, 255)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overlays", type=Path, required=True, help="folder for the pictures")
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--crops", type=Path, default=None, help="a crops.parquet whose faces are drawn too")
    args = ap.parse_args()

    from PIL import ImageDraw

    from curate.core.grid import render_grid, write_png
    from curate.core.image import decode_image
    from curate.testing.faces import load_truth

    found: dict[str, list] = {}
    if args.crops:
        import pyarrow.parquet as pq

        for r in pq.read_table(args.crops).to_pylist():
            found.setdefault(r["source"], []).append((r["face_x"], r["face_y"], r["face_w"], r["face_h"]))
    truth = load_truth()
    args.overlays.mkdir(parents=True, exist_ok=True)
    tiles, captions = [], []
    for source, faces in sorted(truth.items()):
        decoded = decode_image(args.sample / source, 1 << 30)
        if not hasattr(decoded, "image"):
            sys.exit(f"bench/faces_truth.py: cannot read {args.sample / source}: {decoded.reason}")
        im = decoded.image.copy()
        draw = ImageDraw.Draw(im)
        for x, y, w, h in found.get(source, []):
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=_CYAN, width=2)
        for f in faces:
            x, y, w, h = f.box
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=_ORANGE if f.ambiguous else _YELLOW, width=3)
        im.save(args.overlays / f"{Path(source).stem}.jpg", "JPEG", quality=90)
        tiles.append(im)
        captions.append(Path(source).stem)
    sheet = render_grid(tiles, 8, (256, 256), captions=captions, caption_inset=2, caption_colour=(230, 230, 230),
                        background=(40, 40, 40), fit="contain")
    write_png(sheet, args.overlays / "truth-sheet.png")
    print(f"faces_truth: {sum(len(f) for f in truth.values())} faces in {len(truth)} images drawn into {args.overlays}")


if __name__ == "__main__":
    main()
