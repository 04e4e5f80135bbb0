"""Image file bytes -> an RGB ``PIL.Image``, exactly as timm's loader does, with explicit failures.

:func:`decode_image` does what timm's loader does (``Image.open(f).convert('RGB')``) and fails with an
:class:`~mlray.images.shards.ImageError` for: empty data (stage ``read``), not an image, a decompression bomb
(width x height from the header checked against ``max_pixels`` *before* decoding, independent of Pillow's global
``MAX_IMAGE_PIXELS``), a raster or RGB conversion over the per-image memory budget in bytes (:mod:`.budget`, also
checked from the header before decoding), and truncated or corrupt data (a full ``load()``; mlray never sets
``ImageFile.LOAD_TRUNCATED_IMAGES`` and relies on Pillow's default, False). EXIF orientation is NOT applied:
timm's ``validate.py`` does not apply it either, and the published numbers were produced without it. Only the
raster formats of ``IMAGE_EXTENSIONS`` are opened (JPEG/MPO, PNG, WebP, BMP, GIF, TIFF, PPM/PGM), whatever the
file is named; Pillow's other plugins (EPS, PDF, ...) are never tried. Corrupt JPEG data that libjpeg recovers
from with a warning decodes (as it does in timm).
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING

from ..errors import first_line
from .budget import MAX_BUFFER_BYTES, check_buffer
from .shards import ImageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

DEFAULT_MAX_PIXELS = 178_956_970  # = 2 x Pillow's default MAX_IMAGE_PIXELS (the size Pillow refuses outright)
# Pillow formats tried, in order (JPEG's factory also returns MPO files). Nothing else is ever opened.
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")


def open_header(data: bytes) -> PILImage.Image:
    """Identify the image among :data:`PIL_FORMATS` and parse its header, without decoding pixels (and without
    Pillow's bomb check). Raises :class:`ImageError` (stage ``decode``): 'not an image (...)' or, when the data is
    cut inside a recognised header, 'truncated image (...)'."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    buf = io.BytesIO(data)
    failures: list[str] = []
    for fmt in PIL_FORMATS:
        entry = Image.OPEN.get(fmt)
        if entry is None:  # plugin not available in this Pillow build
            continue
        factory, accept = entry
        ok = accept(prefix) if accept else True
        if not ok or isinstance(ok, str):
            continue
        buf.seek(0)
        try:
            return factory(buf, "")
        except (SyntaxError, IndexError, TypeError, struct.error, ValueError, OSError, EOFError) as exc:
            failures.append(f"{fmt} header: {first_line(exc)}")
    if not failures:
        raise ImageError("decode", f"not an image (unknown format, starts with {data[:8]!r})")
    if "truncat" in failures[0].lower():  # cut inside the header: recognisably an image, but truncated
        raise ImageError("decode", f"truncated image ({failures[0]})")
    raise ImageError("decode", f"not an image ({failures[0]})")


def decode_image(
    data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, max_bytes: int | None = MAX_BUFFER_BYTES
) -> PILImage.Image:
    """Decode image file bytes to an RGB ``PIL.Image`` exactly as timm's loader does (``.convert('RGB')``).

    Raises :class:`ImageError` with stage ``read`` for empty data ('empty file'), and stage ``decode`` for:
    'not an image (...)', 'decompression bomb: W x H = N pixels > limit' (checked from the header before any
    pixel is decoded; ``max_pixels=None`` disables it), 'decoding the <mode> image WxH would need N GB (...), over
    the per-image budget (...)' when the decoded raster or its RGB conversion would take more than ``max_bytes``
    bytes (also from the header; ``None`` disables it; see :mod:`mlray.images.budget`), 'truncated image (...)',
    'corrupt image (...)' (a full
    ``load()``), and a mode Pillow cannot convert to RGB. Modes L, LA, P (with or without transparency), RGBA,
    CMYK, I;16, 1 ... are converted by Pillow's ``convert('RGB')``: alpha/transparency is dropped (not composited),
    I;16 values are clipped to 255. EXIF orientation is not applied (timm's validate.py does not apply it).
    Thread-safe: no Pillow global (``LOAD_TRUNCATED_IMAGES``, ``MAX_IMAGE_PIXELS``) is read or changed here.
    """
    if data is None or len(data) == 0:
        raise ImageError("read", "empty file")
    img = open_header(bytes(data))
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError("decode", f"decompression bomb: {width} x {height} = {width * height} pixels > {max_pixels}")
    for mode in dict.fromkeys((img.mode, "RGB")):  # the decoded raster, then its RGB conversion
        check_buffer(f"decoding the {mode} image", width, height, mode, max_pixels=None, max_bytes=max_bytes)
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's problem
        message = first_line(exc)
        kind = "truncated image" if "truncated" in message.lower() else "corrupt image"
        raise ImageError("decode", f"{kind} ({message})") from None
    try:
        return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001
        raise ImageError("decode", f"cannot convert mode {img.mode} to RGB ({first_line(exc)})") from None
