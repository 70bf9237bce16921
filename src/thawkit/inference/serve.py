"""A local page and JSON endpoint for trying a model: `thawkit serve ckpt=PATH [port=8000]`.

FastAPI app, served by uvicorn, bound to 127.0.0.1 unless `host` says otherwise:

- `GET /`: one HTML page (no external assets) where a person drops an image and sees the
  top-k classes with their probabilities;
- `POST /predict`: the image as multipart field `file` -> `{"predictions": [{"class",
  "probability"}], "latency_ms", ...}` (calibrated probabilities); `POST /predict?explain=true`
  adds `"gradcam"`, the Grad-CAM overlay of the top class as a PNG data URL;
- `GET /info`: the model's backbone, classes and image size.

A bad upload (no `file`, not an image type, too large, not decodable) gets a 4xx whose `detail`
says what was wrong and what is accepted; nothing a client sends stops the server.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at run time.
import base64
import io
import logging
import time
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from omegaconf import DictConfig

from thawkit.data.folder import load_rgb
from thawkit.inference.explain import grad_cam_overlay
from thawkit.inference.predict import LoadedModel, load_checkpoint

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def page() -> str:
    """The HTML page (src/thawkit/inference/serve_page.html)."""
    return resources.files("thawkit.inference").joinpath("serve_page.html").read_text("utf-8")


def probabilities(model: LoadedModel, image: Any) -> torch.Tensor:
    """Class probabilities of one PIL RGB image, prepared as the model was validated."""
    x = model.transform(image).unsqueeze(0).to(next(model.module.parameters()).device)
    with torch.inference_mode():
        # The fitted temperature, as predict and evaluate apply it (thawkit.finetune.calibration).
        return model.module.calibrated_logits(x).float().softmax(dim=1)[0].cpu()


def _overlay_data_url(model: LoadedModel, image: Any) -> str:
    """The Grad-CAM overlay of the predicted class as a PNG data URL (the page shows it)."""
    buffer = io.BytesIO()
    grad_cam_overlay(model, image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def create_app(model: LoadedModel, top_k: int = 3, max_upload_mb: float = 10.0) -> FastAPI:
    """The FastAPI app serving `model`."""
    max_bytes = int(max_upload_mb * 1024 * 1024)
    k = min(top_k, len(model.class_names))
    app = FastAPI(title="thawkit", docs_url=None, redoc_url=None)
    too_large = f"the upload is larger than max_upload_mb={max_upload_mb:g} MB"

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Any) -> Any:
        # Refused before the multipart body is read and spooled.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + 64 * 1024:
            return JSONResponse({"detail": too_large}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page()

    @app.get("/info")
    def info() -> dict[str, Any]:
        meta = model.metadata()
        return {k_: meta[k_] for k_ in ("backbone", "image_size")} | {"classes": model.class_names}

    @app.post("/predict")
    def predict(
        file: UploadFile | None = File(None),  # noqa: B008
        explain: bool = False,
    ) -> dict[str, Any]:
        # A plain def: FastAPI runs it in a worker thread, so inference never blocks the loop.
        if file is None:
            raise HTTPException(400, "send the image as multipart form field 'file'")
        kind = file.content_type or ""
        if not kind.startswith("image/"):
            raise HTTPException(
                415, f"{file.filename!r} is sent as {kind or 'no type'}, not an image/* type: "
                "upload a JPEG, PNG, BMP, GIF, TIFF or WebP image",
            )  # fmt: skip
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_large)
        start = time.perf_counter()
        try:
            image = load_rgb(io.BytesIO(data))
        except Exception as e:  # PIL raises many types for broken files
            raise HTTPException(
                400, f"{file.filename!r} could not be decoded as an image ({type(e).__name__})"
            ) from None
        probs = probabilities(model, image)
        values, indices = probs.topk(k)
        latency = (time.perf_counter() - start) * 1000.0
        extra = {"gradcam": _overlay_data_url(model, image)} if explain else {}
        return extra | {
            "predictions": [
                {"class": model.class_names[i], "probability": float(v)}
                for v, i in zip(values.tolist(), indices.tolist(), strict=True)
            ],
            "latency_ms": latency,
            "filename": file.filename,
        }

    return app


def main(cfg: DictConfig) -> None:
    """The `thawkit serve` entry (src/thawkit/conf/serve.yaml): serve until interrupted."""
    import uvicorn

    if cfg.top_k < 1 or cfg.max_upload_mb <= 0:
        raise ValueError(f"top_k={cfg.top_k} must be >= 1 and max_upload_mb > 0")
    model = load_checkpoint(cfg.ckpt, cfg.device)
    app = create_app(model, cfg.top_k, cfg.max_upload_mb)
    if cfg.host not in LOOPBACK:
        log.warning("host=%s: the model is reachable from other machines", cfg.host)
    print(f"Serving {model.path} on http://{cfg.host}:{cfg.port}/ (Ctrl+C stops)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
