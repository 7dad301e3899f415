"""Shopper photos: refused early when too large, read with a cap, checked for type, then decoded.

Two fences: ``BodyLimitMiddleware`` turns away a request whose body (by Content-Length, or by
counting as it arrives when there is none) is larger than any acceptable upload, before the
form is parsed; ``read_photo`` then caps the photo itself at ``api.max_upload_bytes``.
"""

from __future__ import annotations

from fastapi import HTTPException, UploadFile, status
from PIL import Image
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.images import DecodeBudget, decode_image
from engine.settings import ApiSettings

# Room for the form's other fields and the multipart boundaries around the photo.
FORM_OVERHEAD_BYTES = 256 * 1024
CHUNK_BYTES = 64 * 1024
# application/octet-stream is what many HTTP clients send for a file of unknown type: decoding decides.
ACCEPTED_TYPES = ("image/", "application/octet-stream")


# Other requests (product upserts) are JSON; a thousand records fit in far less.
MAX_JSON_BODY_BYTES = 32 * 1024 * 1024
UPLOAD_PATHS = ("/search",)


def too_large(size: str, limit: int) -> str:
    return f"the upload is {size}, more than the limit of {limit} bytes (SNAPSHOP_API__MAX_UPLOAD_BYTES)"


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so the routes' body parsing passes it on as it is
    (any other error there becomes a 400) and the app answers it as a 413 with the reason."""

    def __init__(self, detail: str):
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, detail)


class BodyLimitMiddleware:
    """413 for a request body over its limit, before the app reads (or parses) all of it.

    The limit is the photo limit plus form overhead on upload routes, ``MAX_JSON_BODY_BYTES``
    elsewhere. A declared Content-Length is refused at once; without one, the body is counted
    as it arrives.
    """

    def __init__(self, app: ASGIApp, upload_limit: int):
        self.app = app
        self.upload_limit = upload_limit

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["path"] in UPLOAD_PATHS:
            limit = self.upload_limit + FORM_OVERHEAD_BYTES
            return limit, "the upload is {size}, more than the limit of " + f"{self.upload_limit} bytes " \
                "(SNAPSHOP_API__MAX_UPLOAD_BYTES)"
        return MAX_JSON_BODY_BYTES, "the request body is {size}, more than the limit of " + f"{MAX_JSON_BODY_BYTES} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, template = self._limit(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(template.format(size=f"{declared} bytes"), scope, receive, send)
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge(template.format(size=f"more than {limit} bytes"))
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge as error:
            if started:
                raise
            await self._refuse(error.detail, scope, receive, send)

    @staticmethod
    async def _refuse(detail: str, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": detail}, status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


async def read_photo(upload: UploadFile, max_bytes: int) -> bytes | None:
    """The photo's bytes, or None when the form's file field was left empty."""
    if not upload.filename and not upload.size:
        return None  # a browser form posts an empty file part when no photo was chosen
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if content_type and not content_type.startswith(ACCEPTED_TYPES):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"the photo must be an image (JPEG, PNG, WebP, GIF...), not '{content_type}'",
        )
    data = bytearray()
    while chunk := await upload.read(CHUNK_BYTES):
        data.extend(chunk)
        if len(data) > max_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, too_large(f"over {max_bytes} bytes", max_bytes))
    return bytes(data)


def decode_photo(data: bytes, filename: str | None, settings: ApiSettings,
                 budget: DecodeBudget) -> Image.Image:
    """Blocking: decode in a worker thread, within the request's limits and the server's budget.
    Raises InvalidImage with the reason (DecodeBusy when the budget stays full)."""
    return decode_image(data, source=f"photo '{filename}'" if filename else "photo",
                        max_bytes=settings.max_upload_bytes, max_pixels=settings.max_upload_pixels, budget=budget)
