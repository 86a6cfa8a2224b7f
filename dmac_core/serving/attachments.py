"""Images attached in Chat: stored by content hash next to the logs, sent to Gemini inline.

An image is written once to ``<data_dir>/images/<sha256>.<ext>``; its *reference* is that
file name (``"<sha256>.<ext>"``). Messages carry ``"images": [ref, ...]`` and the interaction
record lists the refs, so the logs link every image without holding its bytes. The type is
decided from the file's magic bytes, never from a user-supplied name.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ..backends.base import Availability, Message
from ..fsio import atomic_write_bytes

MAX_IMAGE_BYTES = 15 * 1024 * 1024  # Gemini refuses requests over 20 MB of inline data
_MIME = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_REF = re.compile(r"^[0-9a-f]{64}\.(png|jpg|gif|webp)$")


class ImageError(ValueError):
    """An image was refused (unknown type, too big, unknown reference); nothing was stored."""


def sniff_extension(data: bytes) -> str:
    """``png``/``jpg``/``gif``/``webp`` from the magic bytes; raises :class:`ImageError` otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise ImageError("Not an image this workbench accepts: PNG, JPEG, GIF or WebP only.")


def images_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "images"


def store_image(data_dir: str | os.PathLike[str], data: bytes) -> str:
    """Store ``data`` by content hash (idempotent, atomic) and return its reference."""
    if not data:
        raise ImageError("The image is empty.")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"The image is {len(data) / 1e6:.1f} MB; the limit is {MAX_IMAGE_BYTES / 1e6:.0f} MB.")
    ref = f"{hashlib.sha256(data).hexdigest()}.{sniff_extension(data)}"
    directory = images_dir(data_dir)
    path = directory / ref
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)  # same content, same name: a concurrent writer is harmless
    return ref


def image_path(data_dir: str | os.PathLike[str], ref: str) -> Path:
    """The file of a reference; refuses anything that is not ``<sha256>.<ext>`` (no paths)."""
    if not _REF.match(str(ref)):
        raise ImageError(f"Not an image reference: {str(ref)[:80]!r}")
    return images_dir(data_dir) / ref


def load_image(data_dir: str | os.PathLike[str], ref: str) -> tuple[bytes, str]:
    """(bytes, MIME type) of a stored image; checks the content still matches its hash."""
    path = image_path(data_dir, ref)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"Image {ref} is not in {images_dir(data_dir)}") from None
    if hashlib.sha256(data).hexdigest() != ref.split(".")[0]:
        raise ImageError(f"Image {ref} is damaged: its content no longer matches its name")
    return data, _MIME[ref.rsplit(".", 1)[1]]


def message_images(messages: list[Message]) -> list[str]:
    """Every image reference in a conversation, in order, without repeats."""
    refs = [str(r) for m in messages for r in (m.get("images") or [])]
    return list(dict.fromkeys(refs))


def gemini_image_parts(data_dir: str | os.PathLike[str], refs: list[str]) -> list[Any]:
    """``types.Part`` inline-data parts for Gemini (the SDK base64-encodes the bytes)."""
    from google.genai import types

    parts = []
    for ref in refs:
        data, mime = load_image(data_dir, ref)
        parts.append(types.Part.from_bytes(data=data, mime_type=mime))
    return parts


def image_support(backend: Any, display_name: str | None = None) -> Availability:
    """Whether a backend can take images (``accepts_images`` attribute); says so when not."""
    if getattr(backend, "accepts_images", False):
        return Availability(True)
    name = display_name or getattr(backend, "name", "this model")
    return Availability(False, f"{name} cannot take images (text only); choose Gemini or remove the image")
