"""File uploads (MESSAGING.md 2.13): the two-part ``multipart/form-data`` body. Pure.

The parts are ``messageEntry`` (JSON text, :class:`~.wire.FileEntry`) and ``fileData``
(the bytes, with a file name). The body is parsed with the standard library's MIME parser,
from bytes the shell already read (and recorded).
"""

from __future__ import annotations

import email.parser
import email.policy
from email.message import EmailMessage

import msgspec

from .wire import Reply, error_reply

__all__ = ["FormPart", "check_file", "parse_form"]

_MIME_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "pdf": "application/pdf",
    "txt": "text/plain",
}


class FormPart(msgspec.Struct, frozen=True, kw_only=True):
    """One part of a form: its bytes, file name (None for a plain field) and type."""

    data: bytes
    filename: str | None
    content_type: str


def parse_form(content_type: str, body: bytes) -> dict[str, FormPart] | Reply:
    """The named parts of a ``multipart/form-data`` body, or the 400 that says why not."""
    if not content_type.lower().startswith("multipart/form-data"):
        return error_reply(400, "Content-Type must be multipart/form-data")
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    parser = email.parser.BytesParser(_class=EmailMessage, policy=email.policy.HTTP)
    message = parser.parsebytes(head + body)
    if not message.is_multipart():
        return error_reply(400, "Malformed multipart body")
    parts: dict[str, FormPart] = {}
    for part in message.iter_parts():
        if not isinstance(part, EmailMessage):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            return error_reply(400, "A multipart part has no name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        parts[name] = FormPart(data=data, filename=part.get_filename(),
                               content_type=part.get_content_type())
    return parts


def check_file(
    part: FormPart, *, max_bytes: int, extensions: tuple[str, ...]
) -> tuple[str, str] | Reply:
    """``(file name, MIME type)`` of an acceptable ``fileData`` part, or 400/413/415."""
    if not part.filename:
        return error_reply(400, "The fileData part needs a file name")
    if len(part.data) > max_bytes:
        return error_reply(413, f"The file is larger than {max_bytes} bytes")
    extension = part.filename.rsplit(".", 1)[-1].lower() if "." in part.filename else ""
    if extension not in extensions:
        return error_reply(415, f"Unsupported file type {extension or '(none)'!r}")
    return part.filename, _MIME_TYPES.get(extension, "application/octet-stream")
