"""Make the near-duplicate copies in copies/ from the photos in originals/.

Run from anywhere: ``python sample_images/make_copies.py``. The output is
committed; this script documents how each copy was made and remakes them.
"""

import shutil
from pathlib import Path

from PIL import Image, ImageEnhance

HERE = Path(__file__).resolve().parent
SRC = HERE / "originals"
DST = HERE / "copies"


def main():
    DST.mkdir(exist_ok=True)
    china = Image.open(SRC / "p0013.jpg")
    china.resize((china.width // 2, china.height // 2), Image.Resampling.LANCZOS).save(
        DST / "china_half_size.jpg", quality=85
    )
    Image.open(SRC / "p0001.jpg").save(DST / "p0001_quality35.jpg", quality=35)
    Image.open(SRC / "p0005.jpg").save(DST / "p0005_resaved.png")
    shutil.copyfile(SRC / "p0006.jpg", DST / "p0006 (copy).jpg")
    ImageEnhance.Brightness(Image.open(SRC / "p0007.jpg")).enhance(1.1).save(
        DST / "p0007_brighter.jpg", quality=90
    )
    p8 = Image.open(SRC / "p0008.jpg")
    p8.resize((p8.width * 2, p8.height * 2), Image.Resampling.BICUBIC).save(
        DST / "p0008_upscaled.jpg", quality=90
    )
    camera = Image.open(SRC / "p0112.png")
    camera.resize((256, 256), Image.Resampling.LANCZOS).save(DST / "camera_thumb.png")
    Image.open(SRC / "p0009.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        DST / "p0009_mirrored.jpg", quality=90
    )
    Image.open(SRC / "p0010.jpg").transpose(Image.Transpose.ROTATE_90).save(
        DST / "p0010_turned_left.jpg", quality=90
    )
    # Stored sideways with an EXIF Orientation tag, as a phone writes it:
    # orientation 6 means "turn 90 degrees clockwise to display".
    p2 = Image.open(SRC / "p0002.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    p2.transpose(Image.Transpose.ROTATE_90).save(DST / "p0002_phone_sideways.jpg", quality=92, exif=exif)


if __name__ == "__main__":
    main()
