"""Open and decode one image the way a person sees it, as cheaply as the hash allows.

Three things set dupfinder's decoding apart from ``Image.open(path)``:

* JPEG draft decoding: libjpeg can decode at 1/2, 1/4 or 1/8 scale straight
  from the DCT coefficients, which is most of the speed on camera photos. We
  ask for the smallest scale that still gives the hash at least twice its
  grid in pixels, so the resampling filter has real pixels to average.
* EXIF orientation is applied, so a phone photo stored sideways matches its
  upright copy.
* Unusual modes are turned into what a viewer shows: 16-bit greyscale is
  scaled (Pillow's ``convert("L")`` clips it to white), transparent pixels
  are laid over white, CMYK and palettes become RGB.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .models import ScanError

# The one decode failure that says nothing about the bytes: another try may pass.
OUT_OF_MEMORY = "not enough memory to decode this image"

__all__ = ["DecodedImage", "load_image", "to_visible", "BACKGROUND"]

# Transparent pixels are shown over white, as browsers and most viewers do.
BACKGROUND = 255

# Formats that pillow-heif provides; registered only when such a file shows
# up, so that a scan of JPEGs does not pay for importing it.
_HEIF_EXTENSIONS = (".heic", ".heif", ".hif", ".avif")
_heif_registered = False


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A decoded image ready to hash, with the size a person sees.

    ``width`` and ``height`` are the full size after EXIF orientation, even
    when ``image`` itself was decoded at a reduced scale.
    """

    image: Image.Image
    width: int
    height: int
    # What load_image(min_size=also) would have given, when the same decode
    # serves it (see load_image's ``also``); None otherwise.
    also: Image.Image | None = None


def _register_heif() -> None:
    global _heif_registered
    if _heif_registered:
        return
    _heif_registered = True
    try:
        import pillow_heif
    except ImportError:  # pragma: no cover - it is a declared dependency
        return
    pillow_heif.register_heif_opener()
    if not _pillow_has_avif():
        try:
            pillow_heif.register_avif_opener()
        except AttributeError:  # newer pillow-heif dropped AVIF: Pillow has it
            pass


def _pillow_has_avif() -> bool:
    from PIL import features

    try:
        return bool(features.check("avif"))
    except ValueError:  # Pillow older than 11.2 does not know the feature
        return False


def to_visible(image: Image.Image) -> Image.Image:
    """Return the image in mode ``L`` or ``RGB`` as a viewer would show it.

    >>> im = Image.new("I;16", (2, 1), 65535)
    >>> to_visible(im).getpixel((0, 0))
    255
    >>> to_visible(Image.new("RGBA", (1, 1), (0, 0, 0, 0))).getpixel((0, 0))
    (255, 255, 255)
    """
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _scale_to_l(image)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
        flat = Image.alpha_composite(background, rgba).convert("RGB")
        return flat.convert("L") if mode in ("LA", "La") else flat
    return image.convert("RGB")


def _scale_to_l(image: Image.Image) -> Image.Image:
    # 16-bit samples span 0..65535: divide by 257 so that 65535 maps to 255
    # and the picture keeps its tones instead of clipping to white.
    pixels = np.asarray(image)
    if image.mode == "F":
        top = 1.0 if pixels.size and float(np.nanmax(pixels)) <= 1.0 else 255.0
        scaled = np.nan_to_num(pixels, nan=0.0) * (255.0 / top)
    elif image.mode == "I" and pixels.size and int(pixels.max()) <= 255 and int(pixels.min()) >= 0:
        scaled = pixels.astype(np.float64)  # an 8-bit image stored in a 32-bit mode
    else:
        scaled = pixels.astype(np.float64) / 257.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _oriented_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    w, h = image.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):
        # Broken EXIF is common in edited files; viewers then show the stored
        # pixels as they are, and so do we.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def load_image(
    path: str,
    *,
    min_size: int | None = None,
    orient: bool = True,
    grey: bool = False,
    raw: bool = False,
    data: bytes | None = None,
    also: int | None = None,
) -> DecodedImage | ScanError:
    """Decode one file, or say why not; never raises for a bad file.

    ``min_size`` is the smallest edge the hash needs: JPEGs are decoded at
    the smallest DCT scale that keeps both edges at or above it (``None``
    decodes at full size). ``grey`` lets a JPEG decode only its luminance,
    which is all the hashes use. The first frame of an animation is used.
    ``raw`` returns the pixels exactly as ``Image.open`` gives them: no
    draft, no orientation, no mode conversion (for ImageHash compatibility).
    ``data``, when given, is the file's bytes already read (so a caller that
    digests them does not read the file twice). ``also`` asks for a second
    image, the one ``min_size=also`` would give, when one decode serves both
    (a JPEG both sizes draft to the same scale, or a format with no draft):
    it is then ``.also``, else that is None.

    >>> import tempfile
    >>> p = tempfile.mktemp(suffix=".jpg")
    >>> Image.new("RGB", (800, 600), "red").save(p)
    >>> d = load_image(p, min_size=32)
    >>> d.width, d.height, d.image.size
    (800, 600, (100, 75))
    >>> load_image(p + ".missing").stage
    'open'
    """
    if path.lower().endswith(_HEIF_EXTENSIONS):
        _register_heif()
    try:
        if data is None:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return ScanError(path, "open", "not a regular file")
            if st.st_size == 0:
                return ScanError(path, "open", "empty file (0 bytes)")
        elif not data:
            return ScanError(path, "open", "empty file (0 bytes)")
        with warnings.catch_warnings():
            # Between Pillow's pixel limit and twice that it only warns; we
            # decode those at reduced scale where we can, which is safe.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path if data is None else io.BytesIO(data))
    except FileNotFoundError:
        return ScanError(path, "open", "file vanished before it could be read")
    except Image.DecompressionBombError as exc:
        return ScanError(path, "open", f"too many pixels (decompression bomb limit): {exc}")
    except Image.UnidentifiedImageError:
        return ScanError(path, "open", "not an image file, or a format Pillow cannot read")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return ScanError(path, "open", _describe(exc))
    try:
        with image:
            if raw:
                image.load()
                return DecodedImage(image, image.width, image.height)
            return _decode(image, min_size=min_size, orient=orient, grey=grey, also=also)
    except Image.DecompressionBombError as exc:
        return ScanError(path, "decode", f"too many pixels (decompression bomb limit): {exc}")
    except MemoryError:
        return ScanError(path, "decode", OUT_OF_MEMORY)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as exc:
        # Pillow's plugins raise all of these on damaged files (truncated
        # data, bad chunk lengths, broken tables); each is this file's error.
        return ScanError(path, "decode", _describe(exc))


def _decode(image: Image.Image, *, min_size: int | None, orient: bool, grey: bool,
            also: int | None = None) -> DecodedImage:
    orientation = _orientation(image) if orient else 1
    width, height = _oriented_size(image, orientation)
    drafts = image.format == "JPEG" and len(image.tile) == 1  # as JpegImageFile.draft decides
    if also and not (min_size and (not drafts or _draft_scale(image.size, min_size) == _draft_scale(image.size, also))):
        also = None
    if min_size and image.format == "JPEG":
        mode = "L" if grey and image.mode in ("L", "RGB", "YCbCr") else image.mode
        image.draft(mode, (min_size, min_size))
    image.load()
    if orient and orientation != 1:
        image = ImageOps.exif_transpose(image)
    image = to_visible(image)
    return DecodedImage(_reduced(image, min_size), width, height, _reduced(image, also) if also else None)


def _draft_scale(size: tuple[int, int], want: int) -> int:
    # The DCT scale Pillow's JPEG draft picks for (want, want): 8, 4, 2 or 1.
    scale = min(size[0] // want, size[1] // want)
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def _reduced(image: Image.Image, min_size: int | None) -> Image.Image:
    if not min_size:
        return image
    # Box-average down to between 2 and 4 times min_size. JPEG drafts stop
    # at 1/8 and PNGs have no draft; without this, resizing a 500x375
    # draft to pHash's 32x32 took 1.6 ms, with it 0.3. It also puts every
    # copy of a picture, whatever its size, through the same last steps.
    # (Down to 1-2 times min_size cost crops and turns recall in tests.)
    factor = min(image.size) // (2 * min_size)
    return image.reduce(factor) if factor >= 2 else image


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text or type(exc).__name__
