"""The manufacturing routes of the HTTP service: ``POST /v1/manufacturing/inspect``.

A camera station posts one image (multipart field ``image``: PNG, JPEG, BMP or TIFF, 8 or 16
bit) and gets the verdict, score, threshold and defect type of the registry's ``production``
inspector, optionally with the anomaly overlay as a base64 PNG.

How a request is served:

- the upload is decoded in a thread of the request (never in the event loop, never in the
  model's thread) by the same reader as the CLI, batch jobs and the dashboard
  (``images.read_image``), after its declared size was checked against the pixel limit
  (``TRILLIUM_LIMIT_IMAGE_PIXELS``): a decompression bomb is refused (413) before any decoder
  allocates its frame;
- the decoded image goes to the worker's dynamic batcher: concurrent requests of one worker
  share one ``Inspector.inspect_arrays`` call. A batch reads the live inspector once, so every
  image of it is judged by one version, and each response names that version;
- the inspector follows the registry alias ``production`` (``ctx.live_model``): when it moves,
  the next batches use the new version, without a restart and without a failed request.

Nothing is written unless ``line`` is given (see ``inspect``); then one row, complete, is stored.
"""

from __future__ import annotations

import base64
import io
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from trillium.core.access import KeyInfo
from trillium.core.errors import InputValidationError
from trillium.core.registry import ModelRecord
from trillium.core.service.context import ServiceContext
from trillium.core.service.errors import ERROR_RESPONSES, error_response
from trillium.core.untrusted import LimitExceededError, Limits, check_pixels, save_upload

__all__ = ["InspectResponse", "decode_upload", "router"]

BATCHER = "inspector"
_LINE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:/#-]{0,99}$"
_MAX_IMAGE_ID = 200  # the predictions table's entity id


def _not_null(schema: dict[str, Any]) -> None:
    """Left out, an option is None; the schema shows only the value's own type (a client never sends null)."""
    branches = schema.pop("anyOf", None)
    if branches:
        schema.update(next(b for b in branches if b.get("type") != "null"))
    schema.pop("default", None)


class InspectResponse(BaseModel):
    """The inspection of one uploaded image."""

    image_id: str = Field(description="The image's name: the `image_id` form field, else the upload's file name, "
                                      "else an id made here (`upload-<hex>`).")
    verdict: Literal["good", "defect"] = Field(description="`defect` when the score is at or above the threshold.")
    score: float = Field(description="The anomaly score (higher is more anomalous).")
    threshold: float = Field(description="The inspector's decision threshold for this version.")
    defect_type: str | None = Field(description="The defect type of a rejected part when the inspector has a "
                                                "defect-type classifier; null for good parts or without one.")
    type_confidence: float | None = Field(
        ge=0.0, le=1.0, description="The classifier's probability of `defect_type`; null when there is no type.")
    model: str = Field(description="The inspector that judged the image, as `<name>:v<version>`.")
    model_version: int = Field(ge=1, description="That inspector's registry version.")
    width: int = Field(ge=1, description="The uploaded image's width in pixels.")
    height: int = Field(ge=1, description="The uploaded image's height in pixels.")
    channels: Literal[1, 3] = Field(description="1 (grey) or 3 (colour), as decoded.")
    line: str | None = Field(description="The production line the inspection was stored on; null when not stored.")
    stored: bool = Field(description="Whether the inspection was stored (it is when `line` is given).")
    overlay_png: str | None = Field(
        default=None, description="The image with the anomaly map as a heat overlay, a base64 PNG; only when "
                                  "`overlay` is true.")


@dataclass(frozen=True)
class _Item:
    """What one request puts in the batcher: the decoded image, its id and whether it wants the map."""

    image: np.ndarray
    image_id: str
    keep_map: bool


def _invalid(message: str, field: str = "image") -> InputValidationError:
    exc = InputValidationError(message)
    exc.fields = [field]  # type: ignore[attr-defined]  # the error handler lists them
    return exc


def _check_declared_pixels(data: bytes, label: str, lim: Limits) -> None:
    """Refuse an image whose header declares more pixels than ``image_pixels``, before decoding it.

    Pillow reads only the header here (``Image.open`` is lazy). A file Pillow does not recognise
    is left to ``read_image``, whose OpenCV fallback has the same limit set
    (``OPENCV_IO_MAX_IMAGE_PIXELS``).
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise LimitExceededError(label, "the declared frame", "past Pillow's decompression-bomb bound",
                                 "image_pixels", lim.image_pixels) from exc
    except Exception:  # noqa: BLE001 - not Pillow's: read_image reports what is wrong with it
        return
    if width > 0 and height > 0:
        check_pixels(label, height, width, lim=lim)


def decode_upload(data: bytes, filename: str, lim: Limits) -> np.ndarray:
    """An uploaded image's bytes as float32 (H, W, C) in [0, 1], through ``images.read_image``.

    The bytes go to a private temporary folder under a name of ours (``save_upload``: the
    client's file name is only a label) and are read there, exactly as the CLI reads a file, so
    the service and ``Inspector.inspect`` give the same pixels for the same bytes. Errors name
    the field ``image``: ``LimitExceededError`` (413) past the pixel limit,
    ``InputValidationError`` (422) for anything that is not a readable image.
    """
    from trillium.manufacturing.images import IMAGE_EXTENSIONS, ImageReadError, read_image

    label = f"image {filename!r}" if filename else "image"
    if not data:
        raise _invalid(f"{label}: the upload is empty (0 bytes); send a PNG, JPEG, BMP or TIFF file")
    _check_declared_pixels(data, label, lim)
    suffix = Path(filename).suffix.lower() if filename else ""
    with tempfile.TemporaryDirectory(prefix="trillium-inspect-") as tmp:
        path = save_upload(data, tmp, suffix=suffix if suffix in IMAGE_EXTENSIONS else ".img", label=label, lim=lim)
        try:
            return read_image(path, max_pixels=lim.image_pixels)
        except ImageReadError as exc:
            raise _invalid(f"{label}: cannot read it as an image: {exc.reason}. Send a PNG, JPEG, BMP or TIFF "
                           "file (8 or 16 bit)") from None


def _image_id(given: str | None, filename: str | None) -> str:
    if given:
        return given
    # the client's file name, without control characters (PostgreSQL refuses NUL in text)
    name = "".join(ch for ch in (filename or "") if ch >= " " and ch != "\x7f").strip()
    return name[:_MAX_IMAGE_ID] if name else f"upload-{uuid.uuid4().hex[:16]}"


def _pick(form: Any, query: Any) -> Any:
    """An option given as a form field or a query parameter; the form field wins when both are."""
    return form if form is not None else query


def router(ctx: ServiceContext) -> APIRouter:
    """The manufacturing routes; the core mounts them under ``/v1/manufacturing``."""
    from trillium.manufacturing.pipeline import DEFAULT_NAME, Inspector, overlay_png

    def load(record: ModelRecord, _previous: Any) -> Inspector:
        inspector = Inspector.from_registry(record.name, record.version, registry=ctx.registry)
        channels = inspector.detector.channels
        inspector.inspect_arrays([np.zeros((*inspector.size, channels), np.float32)])  # warm before going live
        return inspector

    live = ctx.live_model(DEFAULT_NAME, load)
    holder: dict[str, Any] = {}

    def start_sampling() -> None:
        from trillium.core.monitoring.online import service_collector
        from trillium.manufacturing.monitoring import STATS, THRESHOLDS

        # the parts this worker inspects, sampled per day (server clock, UTC) and checked for drift
        # on their image statistics (the embedding would cost a second pass of the network; the
        # batch jobs check it); anomaly scores are no probabilities, so no precision is estimated
        holder["online"] = service_collector(ctx, DEFAULT_NAME, names=STATS, thresholds=THRESHOLDS,
                                             performance=False)

    ctx.on_startup(start_sampling)

    def inspect_batch(items: list[_Item]) -> list[tuple[Any, ModelRecord]]:
        inspector = live.current  # read once: the whole batch is judged by one version
        record = inspector.record
        inputs = np.stack([inspector.prepare(it.image) for it in items])  # prepared once, for both uses
        results = inspector.inspect_arrays([it.image for it in items], [it.image_id for it in items],
                                           keep_maps=any(it.keep_map for it in items), inputs=inputs)
        collector = holder.get("online")
        if collector is not None and record is not None:
            from trillium.manufacturing.monitoring import STATS, image_stats

            stats = image_stats(inputs)[list(STATS)].to_numpy()
            collector.observe(record.version, stats, np.array([r.score for r in results], np.float64),
                              np.array([r.verdict == "defect" for r in results]), np.full(len(items), time.time()))
        return [(r, record) for r in results]

    batcher = ctx.batcher(BATCHER, inspect_batch, stack=False, mode="thread")
    api = APIRouter()

    @api.post("/inspect", response_model=InspectResponse, responses=ERROR_RESPONSES,
              summary="Inspect one image: verdict, score, defect type, optional overlay")
    async def inspect(
        image: Annotated[UploadFile, File(description="The image: PNG, JPEG, BMP or TIFF, 8 or 16 bit, grey or "
                                                      "colour (the pixel limit is TRILLIUM_LIMIT_IMAGE_PIXELS).")],
        overlay: Annotated[bool | None, Form(json_schema_extra=_not_null, description="Return the anomaly overlay "
                                             "as a base64 PNG (default false).")] = None,
        line: Annotated[str | None, Form(pattern=_LINE_PATTERN, json_schema_extra=_not_null, description="Store "
                                         "the inspection on this production line (needs manufacturing:write).")
                        ] = None,
        image_id: Annotated[str | None, Form(min_length=1, max_length=_MAX_IMAGE_ID, pattern=r"^[^\x00-\x1f\x7f]+$",
                                             json_schema_extra=_not_null,
                                             description="The part's id (default: the file name).")] = None,
        overlay_q: Annotated[bool | None, Query(alias="overlay", json_schema_extra=_not_null,
                                                description="As the form field `overlay`.")] = None,
        line_q: Annotated[str | None, Query(alias="line", pattern=_LINE_PATTERN, json_schema_extra=_not_null,
                                            description="As the form field `line`.")] = None,
        key: KeyInfo = ctx.require("manufacturing:read"),
    ) -> Any:
        """Judge one uploaded image with the `production` inspector.

        `overlay` and `line` may come as form fields or query parameters (the form field wins).

        Scope: `manufacturing:read`, since judging an image writes nothing. With `line`, the
        inspection is also stored as one row of that line's record (what the line's p-chart
        and defect rate count), which is a write: the key then needs `manufacturing:write`,
        checked before anything is decoded. The row is written whole, after the model answered,
        or not at all.
        """
        want_overlay = bool(_pick(overlay, overlay_q))
        store_line = _pick(line, line_q)
        if store_line is not None:
            key.require("manufacturing:write")
        data = await image.read()
        try:
            pixels = await run_in_threadpool(decode_upload, data, image.filename or "", ctx.limits)
        except LimitExceededError as exc:
            return error_response(413, "too_large", str(exc), ["image", exc.limit_name])
        name = _image_id(image_id, image.filename)
        result, record = await ctx.run_batched(batcher, _Item(pixels, name, want_overlay))
        body = InspectResponse(
            image_id=name, verdict=result.verdict, score=result.score, threshold=result.threshold,
            defect_type=result.defect_type, type_confidence=result.type_confidence,
            model=f"{record.name}:v{record.version}", model_version=record.version,
            height=pixels.shape[0], width=pixels.shape[1], channels=pixels.shape[2],
            line=store_line, stored=store_line is not None,
        )
        if want_overlay:
            png = await run_in_threadpool(overlay_png, pixels, result.anomaly_map)
            body.overlay_png = base64.b64encode(png).decode("ascii")
        if store_line is not None:
            from trillium.manufacturing.linestats import store_inspections

            row = {"image_id": name, "score": result.score, "verdict": result.verdict,
                   "defect_type": result.defect_type, "threshold": result.threshold}
            await run_in_threadpool(store_inspections, [row], db=ctx.db, line=store_line,
                                    model_version_id=record.id)
        return body

    return api


def demo_call(client: Any) -> str:
    """The demo's call: inspect one synthetic part with a scratch (``trillium demo``'s last step)."""
    import io

    from PIL import Image

    from trillium.manufacturing.synth import synthetic_images

    images, _ = synthetic_images(1, size=128, seed=11, defect="scratch")
    buf = io.BytesIO()
    Image.fromarray((images[0][..., 0] * 255).round().astype("uint8")).save(buf, format="PNG")
    r = client.post("/v1/manufacturing/inspect", files={"image": ("demo-part.png", buf.getvalue(), "image/png")})
    r.raise_for_status()
    a = r.json()
    return f"POST /v1/manufacturing/inspect: {a['verdict']} (score {a['score']:.3f}, threshold " \
           f"{a['threshold']:.3f}, {a['model']})"
