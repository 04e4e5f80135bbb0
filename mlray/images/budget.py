"""The memory budget of one image: the largest buffer decoding or preprocessing one image may allocate.

A hostile file can be tiny and still ask for gigabytes: a 34 KB 1 x 10000 PNG, resized so that its short side is
256, becomes a 256 x 2,560,000 RGB image (2.62 GB in Pillow, which keeps RGB in 4 bytes per pixel). So every
buffer is checked BEFORE it is allocated, for any aspect ratio:

- the decoded raster and its RGB conversion, from the header's size and mode (:func:`mlray.images.decode_image`);
- each resize of a model's preprocessing (its output and Pillow's intermediate pass), computed from the
  preprocessing alone, and the RGB conversion of an image that is not RGB yet (:func:`mlray.models.preprocess_uint8`).

A buffer over :data:`MAX_BUFFER_PIXELS` pixels or :data:`MAX_BUFFER_BYTES` bytes is an
:class:`~mlray.images.shards.ImageError` (stage ``decode``) naming the buffer, its size and the budget -- never an
allocation. The defaults admit every raster the default decompression-bomb limit admits (a 50 MP photo needs
0.2 GB), so real photos are never refused.
"""

from __future__ import annotations

from .shards import ImageError

MAX_BUFFER_PIXELS = 178_956_970
"""The most pixels one buffer of one image may hold (= the default decompression-bomb limit,
:data:`mlray.images.decode.DEFAULT_MAX_PIXELS`)."""

MAX_BUFFER_BYTES = 4 * MAX_BUFFER_PIXELS
"""The most bytes one buffer of one image may take: 715,827,880 (0.72 GB), the largest raster of
:data:`MAX_BUFFER_PIXELS` pixels in Pillow's widest modes (RGB, RGBA, CMYK, I, F: 4 bytes per pixel)."""


def pillow_bytes_per_pixel(mode: str) -> int:
    """The bytes per pixel Pillow stores for an image of ``mode``: 1 for ``1`` / ``L`` / ``P``, 2 for ``I;16*``,
    4 for every other mode (RGB, RGBA, LA, CMYK, YCbCr, I, F ...: Pillow keeps them in 32 bits per pixel)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def show_bytes(n: int) -> str:
    """``n`` bytes as shown in a message: '2.62 GB' from 10 MB up, else '4.00 MB' (decimal units)."""
    return f"{n / 1e9:.2f} GB" if n >= 10_000_000 else f"{n / 1e6:.2f} MB"


def _budget(max_pixels: int | None, max_bytes: int | None) -> str:
    """The budget as shown in a message: ``'178,956,970 pixels, 0.72 GB per buffer'``."""
    parts = []
    if max_pixels is not None:
        parts.append(f"{max_pixels:,} pixels")
    if max_bytes is not None:
        parts.append(show_bytes(max_bytes))
    return ", ".join(parts) + " per buffer"


def check_buffer(
    what: str,
    width: int,
    height: int,
    mode: str = "RGB",
    *,
    max_pixels: int | None = MAX_BUFFER_PIXELS,
    max_bytes: int | None = MAX_BUFFER_BYTES,
) -> None:
    """Raise :class:`ImageError` (stage ``decode``) when a ``width`` x ``height`` buffer of Pillow ``mode`` is over
    the budget (more than ``max_pixels`` pixels or ``max_bytes`` bytes; None = no limit of that kind), e.g.
    'resize to 256x2560000 would need 2.62 GB (655,360,000 pixels), over the per-image budget (178,956,970 pixels,
    0.72 GB per buffer)'. ``what`` names the buffer ('resize to', 'decoding the CMYK image', ...)."""
    pixels = width * height
    need = pixels * pillow_bytes_per_pixel(mode)
    if (max_pixels is not None and pixels > max_pixels) or (max_bytes is not None and need > max_bytes):
        raise ImageError(
            "decode",
            f"{what} {width}x{height} would need {show_bytes(need)} ({pixels:,} pixels), over the per-image "
            f"budget ({_budget(max_pixels, max_bytes)})",
        )
