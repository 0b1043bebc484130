"""Pictures for judging crop geometry at a glance: boxes drawn on sources, and contact sheets.

`curate crop --overlays DIR` writes DIR/images/<id>.jpg per source (face boxes in green, accepted
crop boxes in blue (rotated with --align), rejected faces in red with their reason; AnimeFace's eyes, nose, mouth and chin as
yellow dots, each face labelled with the cascade's confidence c and AnimeFace's likelihood l) and, at the end, DIR/crops-sheet.png
(the crops side by side, labelled) and DIR/overlays-sheet.png (the annotated sources).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from curate.core.grid import read_tiles, render_grid, write_png
from curate.core.workdir import Workdir

OVERLAY_SIDE = 768  # long side of an overlay picture
_GREEN, _BLUE, _RED, _YELLOW = (0, 200, 0), (30, 90, 255), (230, 20, 20), (255, 220, 0)


def draw_overlay(decoded, faces, placed) -> bytes:
    """A JPEG of the (reduced) source with every face box, crop box and rejection reason drawn on it."""
    im = decoded.image.convert("RGB")
    width, height = decoded.source_size
    f = min(1.0, OVERLAY_SIDE / max(im.size)) * im.width / width
    if f * width != im.width:
        im = im.resize((max(1, round(width * f)), max(1, round(height * f))), Image.Resampling.BILINEAR)
    else:
        im = im.copy()
    draw = ImageDraw.Draw(im)

    def rect(box, colour, w):
        draw.rectangle([box.x * f, box.y * f, (box.x + box.w) * f - 1, (box.y + box.h) * f - 1], outline=colour, width=w)

    placed_by_index = {i: p for i, _face, p in placed}
    for i, face in enumerate(faces):
        p = placed_by_index.get(i)
        if p is None or isinstance(p, str):
            rect(face.box, _RED, 2)
            label = f"{i} {p or 'over max'}"
        else:
            quad = getattr(p, "quad", None)  # --align: the rotated box
            if quad is not None:
                draw.polygon([(x * f, y * f) for x, y in quad], outline=_BLUE, width=3)
            else:
                rect(p.box, _BLUE, 3)
            rect(face.box, _GREEN, 2)
            label = f"{i} k={p.k:.2f}" + (" pad" if p.padded else "") + (f" {p.angle:+.0f}deg" if quad else "")
        lm = getattr(face, "landmarks", None)
        if face.confidence is not None:
            label += f" c={face.confidence:.1f}"
        if lm is not None:
            label += f" l={lm.likelihood:.2f}"
            centres = (lm.centre(lm.left_eye), lm.centre(lm.right_eye), lm.nose, lm.centre(lm.mouth), lm.chin)
            for x, y in centres:
                draw.ellipse([x * f - 3, y * f - 3, x * f + 3, y * f + 3], fill=_YELLOW)
        draw.text((face.box.x * f + 3, face.box.y * f + 2), label, fill=_RED if p is None or isinstance(p, str) else _GREEN)
    if not faces:
        draw.text((4, 4), "no face", fill=_RED)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def contact_sheet(workdir: Workdir, out_dir: Path, limit: int = 200) -> None:
    """crops-sheet.png (the first `limit` crops of the table) and overlays-sheet.png (annotated sources)."""
    import pyarrow.parquet as pq

    table = pq.read_table(workdir.crops_table, columns=["crop_id", "file", "scale"]).slice(0, limit).to_pylist()
    tiles = read_tiles([workdir.root / row["file"] for row in table])
    captions = [f"{row['crop_id']} x{row['scale']:.2f}" for row in table]
    write_png(_sheet(tiles, captions, (128, 256), 12), out_dir / "crops-sheet.png", compress_level=3)

    paths = sorted((out_dir / "images").glob("*.jpg"))[:limit]
    write_png(_sheet(read_tiles(paths), [p.stem for p in paths], (256, 256), 8), out_dir / "overlays-sheet.png",
              compress_level=3)


def _sheet(tiles, captions: list[str], tile: tuple[int, int], columns: int):
    return render_grid(tiles, columns, tile, captions=captions, caption_inset=2, caption_colour=(230, 230, 230),
                       background=(40, 40, 40), fit="contain", resample=Image.Resampling.BICUBIC)
