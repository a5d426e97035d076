"""One shard of an image batch: draw pictures, then thumbnail them with Pillow.

Usage: thumbnails.py SHARD SHARDS. The batch is 24 pictures of 2400 x 1600 pixels (gradients,
circles and lines, drawn from a seed, so reruns give identical files); shard k of n takes
pictures k, k+n, ... It saves each picture as photos/photo-NN.png (kept in the shard's folder),
then writes out/thumb-NN.jpg (at most 256 pixels wide, sharpened) and out/shard-K.json with
each picture's size, its thumbnail's size and its mean colour.
"""

import json
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageStat

PICTURES = 24
SIZE = (2400, 1600)
THUMBNAIL = (256, 256)


def draw(number: int) -> Image.Image:
    """A seeded picture: a vertical gradient, then circles and lines in random colours."""
    rng = random.Random(number)
    top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    gradient = Image.linear_gradient("L").resize(SIZE)
    picture = Image.composite(Image.new("RGB", SIZE, bottom), Image.new("RGB", SIZE, top), gradient)
    pen = ImageDraw.Draw(picture)
    for _ in range(40):
        x, y, r = rng.randrange(SIZE[0]), rng.randrange(SIZE[1]), rng.randrange(20, 300)
        colour = tuple(rng.randrange(256) for _ in range(3))
        pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        pen.line((x, y, rng.randrange(SIZE[0]), rng.randrange(SIZE[1])), fill=colour, width=8)
    return picture


def main() -> None:
    shard, shards = int(sys.argv[1]), int(sys.argv[2])
    photos, out = Path("photos"), Path("out")
    photos.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    summary = []
    for number in range(shard, PICTURES, shards):
        source = photos / f"photo-{number:02d}.png"
        draw(number).save(source)
        with Image.open(source) as picture:
            thumb = picture.copy()
            thumb.thumbnail(THUMBNAIL)
            thumb = thumb.filter(ImageFilter.SHARPEN)
            thumb.save(out / f"thumb-{number:02d}.jpg", quality=85)
            summary.append({
                "picture": number,
                "size": list(picture.size),
                "thumbnail": list(thumb.size),
                "mean_colour": [round(c, 1) for c in ImageStat.Stat(picture).mean],
            })
        print(f"shard {shard}: picture {number} -> out/thumb-{number:02d}.jpg")
    (out / f"shard-{shard}.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
