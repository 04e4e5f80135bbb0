"""A corpus of hostile inputs for an image folder, generated into a temporary folder (nothing binary is committed).

:func:`build_corpus` writes one directory entry per :class:`Case` into a folder and returns the cases, each with
what must come out of planning + reading + decoding + preprocessing it:

- ``Expect.ok((w, h))``: decodes to an RGB image of exactly ``w`` x ``h`` and preprocesses to the model's input;
- ``Expect.error(stage, text)``: an ``ImageError`` of ``stage`` whose reason contains ``text``;
- ``Expect.skip()``: skipped by the listing and counted (hidden, or not an image name).

Some cases change after planning (``Case.after_planning``): a file truncated or removed between listing and
reading. The kinds that need the process to be unprivileged (a ``chmod 000`` file) are not here: root reads
everything (see ``test_hostile_inputs.py``).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, features

# ---------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expect:
    """What one entry must become: ``outcome`` 'ok' (``size`` = decoded (w, h)), 'error' (``stage`` + ``text``, a
    substring of the reason) or 'skip'."""

    outcome: str
    size: tuple[int, int] | None = None
    stage: str | None = None
    text: str | None = None

    @staticmethod
    def ok(size: tuple[int, int]) -> Expect:
        return Expect("ok", size=size)

    @staticmethod
    def error(stage: str, text: str) -> Expect:
        return Expect("error", stage=stage, text=text)

    @staticmethod
    def skip() -> Expect:
        return Expect("skip")


@dataclass
class Case:
    """One hostile entry: its ``name`` in the folder, the ``kind`` it stands for, and what it must become.
    ``after_planning`` (if any) is run on the entry's path after planning, before reading."""

    kind: str
    name: str
    expect: Expect
    after_planning: Callable[[Path], None] | None = field(default=None, repr=False)

    @property
    def image_id(self) -> str:
        return self.name.rsplit(".", 1)[0]


# ---------------------------------------------------------------- bytes


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(size: tuple[int, int] = (64, 48), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A noisy image of ``size`` (w, h) in ``mode`` (made from RGB noise)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))
    return img if mode == "RGB" else img.convert(mode)


def png_with_header_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): a decompression bomb by header."""
    data = bytearray(encode(Image.new("1", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def thin_png(width: int, height: int) -> bytes:
    """A ``width`` x ``height`` grayscale PNG (a 1x10000 one is about 10 KB)."""
    return encode(Image.new("L", (width, height), 128), "PNG")


def jpeg_with_exif(**tags: object) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[int(tag.lstrip("t"), 16)] = value
    return encode(photo(), "JPEG", exif=exif.tobytes(), quality=90)


def palette_png_with_transparency() -> bytes:
    img = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(img, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [photo(seed=s).convert("P") for s in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    pages = [photo(seed=0), photo((32, 16), seed=1)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray((np.arange(64 * 48, dtype=np.uint16) * 20).reshape(48, 64)), "PNG")


HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
)


# ---------------------------------------------------------------- changes after planning


def truncate_to_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncate_to_zero(path: Path) -> None:
    path.write_bytes(b"")


def remove(path: Path) -> None:
    path.unlink()


# ---------------------------------------------------------------- the corpus


def _cases() -> list[tuple[Case, bytes | Callable[[Path], None]]]:
    """(case, its content: bytes to write, or a function that makes the entry at a path)."""
    good = encode(photo(), "JPEG", quality=90)
    decode_trunc = Expect.error("decode", "truncated image (")
    not_image = Expect.error("decode", "not an image (")
    cases: list[tuple[Case, bytes | Callable[[Path], None]]] = [
        (Case("good JPEG (baseline)", "good.JPEG", Expect.ok((64, 48))), good),
        (Case("truncated JPEG", "truncated.JPEG", decode_trunc), good[: len(good) // 2]),
        (Case("zero-byte file", "zero.JPEG", Expect.error("read", "empty file")), b""),
        (Case("text named .JPEG", "text.JPEG", not_image), b"This is a text file, not an image.\n"),
        (Case("HTML error page named .jpg", "html.jpg", not_image), HTML_ERROR_PAGE),
        (
            Case("PDF named .jpg (never opened by another plugin)", "pdf.jpg", not_image),
            b"%PDF-1.4\n%\xe2\xe3\n1 0 obj",
        ),
        (
            Case("PNG named .JPEG (content sniffing)", "png_named_jpeg.JPEG", Expect.ok((64, 48))),
            encode(photo(), "PNG"),
        ),
        (Case("CMYK JPEG", "cmyk.JPEG", Expect.ok((64, 48))), encode(photo(mode="CMYK"), "JPEG")),
        (Case("grayscale JPEG", "gray.JPEG", Expect.ok((64, 48))), encode(photo(mode="L"), "JPEG")),
        (Case("16-bit grayscale PNG", "sixteen.png", Expect.ok((64, 48))), sixteen_bit_png()),
        (Case("palette PNG with transparency", "palette.png", Expect.ok((64, 48))), palette_png_with_transparency()),
        (Case("RGBA PNG", "rgba.png", Expect.ok((64, 48))), encode(photo(mode="RGBA"), "PNG")),
        (Case("animated GIF (3 frames)", "animated.gif", Expect.ok((64, 48))), animated_gif()),
        (Case("multi-page TIFF (2 pages)", "multipage.tif", Expect.ok((64, 48))), multipage_tiff()),
        (Case("tiny 1x1", "tiny.png", Expect.ok((1, 1))), encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG")),
        (
            Case("huge dimensions in the header (bomb)", "bomb.png", Expect.error("decode", "decompression bomb:")),
            png_with_header_size(100_000, 100_000),
        ),
        (
            Case("1x10000 (extreme aspect ratio)", "tall.png", Expect.error("decode", "resize to 256x2560000 would")),
            thin_png(1, 10_000),
        ),
        (
            Case("10000x1 (extreme aspect ratio)", "wide.png", Expect.error("decode", "resize to 2560000x256 would")),
            thin_png(10_000, 1),
        ),
        (Case("1x100 (thin, within the budget)", "thin.png", Expect.ok((1, 100))), thin_png(1, 100)),
        (
            Case("JPEG with a huge EXIF block (60 KB)", "exif_huge.JPEG", Expect.ok((64, 48))),
            jpeg_with_exif(t010E="x" * 60_000),
        ),
        (
            Case("JPEG with a huge ICC profile (1 MB)", "icc_huge.JPEG", Expect.ok((64, 48))),
            encode(photo(), "JPEG", icc_profile=bytes(range(256)) * 4096),
        ),
        (Case("EXIF rotation 6 (not applied)", "rotated.JPEG", Expect.ok((64, 48))), jpeg_with_exif(t0112=6)),
        (Case("progressive JPEG", "progressive.JPEG", Expect.ok((64, 48))), encode(photo(), "JPEG", progressive=True)),
        (Case("BMP", "bitmap.bmp", Expect.ok((64, 48))), encode(photo(), "BMP")),
        (Case("symlink to a good file", "link_good.JPEG", Expect.ok((64, 48))), lambda p: p.symlink_to("good.JPEG")),
        (
            Case("symlink to a missing file", "broken.JPEG", Expect.error("read", "broken link: ")),
            lambda p: p.symlink_to("missing.JPEG"),
        ),
        (
            Case("symlink loop", "loop_a.JPEG", Expect.error("read", "broken link (a loop of links): ")),
            lambda p: p.symlink_to("loop_b.JPEG"),
        ),
        (
            Case("symlink loop (other end)", "loop_b.JPEG", Expect.error("read", "broken link (a loop of links): ")),
            lambda p: p.symlink_to("loop_a.JPEG"),
        ),
        (
            Case("directory named x.JPEG", "folder.JPEG", Expect.error("read", "a directory, not a file: ")),
            lambda p: p.mkdir(),
        ),
        (
            Case("FIFO named x.JPEG", "fifo.JPEG", Expect.error("read", "not a regular file (fifo): ")),
            lambda p: os.mkfifo(p),
        ),
        (
            Case("socket named x.JPEG", "socket.JPEG", Expect.error("read", "not a regular file (socket): ")),
            make_socket,
        ),
        (
            Case(
                "symlink to a device (/dev/zero)",
                "device.JPEG",
                Expect.error("read", "not a regular file (character device): "),
            ),
            lambda p: p.symlink_to("/dev/zero"),
        ),
        (Case("hidden file", ".hidden.JPEG", Expect.skip()), good),
        (Case("macOS resource fork", "._good.JPEG", Expect.skip()), b"\x00\x05\x16\x07"),
        (Case("non-image extension", "notes.txt", Expect.skip()), b"notes\n"),
        (Case("no extension", "README", Expect.skip()), b"readme\n"),
        (Case("FIFO without an image name", "pipe", Expect.skip()), lambda p: os.mkfifo(p)),
        (
            Case("truncated after planning", "shrinks.JPEG", decode_trunc, after_planning=truncate_to_half),
            good,
        ),
        (
            Case(
                "emptied after planning",
                "emptied.JPEG",
                Expect.error("read", "empty file"),
                after_planning=truncate_to_zero,
            ),
            good,
        ),
        (
            Case(
                "removed after planning", "vanished.JPEG", Expect.error("read", "no such file: "), after_planning=remove
            ),
            good,
        ),
    ]
    if features.check("webp"):
        cases.append((Case("WebP", "webp.webp", Expect.ok((64, 48))), encode(photo(), "WEBP")))
    return cases


@contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def make_socket(path: Path) -> None:
    """A UNIX socket file at ``path`` (bound by its relative name: socket paths are limited to ~108 bytes)."""
    with _cwd(path.parent):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path.name)
        finally:
            sock.close()


def build_corpus(folder: Path) -> list[Case]:
    """Write every hostile entry into ``folder`` (created) and return the cases, one per directory entry."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for case, content in _cases():
        path = folder / case.name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path)
        out.append(case)
    return out
