"""thawkit serve: a real server on a free localhost port answers a photo with classes and every
bad upload with a 4xx (and keeps serving); the page shows a dropped image's class (slow)."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
from PIL import Image

from conftest import make_image_folder, tiny_cfg
from thawkit.config.schema import ServeSchema
from thawkit.inference.predict import LoadedModel
from thawkit.inference.serve import create_app, page
from thawkit.run.train import build

# Dispatches a real drop event carrying a generated PNG onto the page's drop zone.
DROP_SCRIPT = """<script>
window.addEventListener("load", () => {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 64;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "rgb(220, 40, 40)";
  ctx.fillRect(0, 0, 64, 64);
  canvas.toBlob(blob => {
    const data = new DataTransfer();
    data.items.add(new File([blob], "dropped.png", {type: "image/png"}));
    document.getElementById("drop").dispatchEvent(
      new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
  }, "image/png");
});
</script>"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The app of an (untrained) tiny model, served by uvicorn in a thread on a free port."""
    import uvicorn
    from fastapi.responses import HTMLResponse

    tmp = tmp_path_factory.mktemp("serve")
    root = make_image_folder(tmp / "images", {"cat": 4, "dog": 4}, ("train", "val"))
    _, module, _ = build(tiny_cfg(tmp, ["~logger"], data_root=root))
    model = LoadedModel(
        module.eval(), ["cat", "dog"], module.backbone.preprocessing, 32, tmp / "m.ckpt"
    )
    app = create_app(model, top_k=3, max_upload_mb=1)
    app.get("/droptest", response_class=HTMLResponse)(
        lambda: page().replace("</body>", DROP_SCRIPT + "</body>")
    )
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _photo() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, "JPEG")
    return buf.getvalue()


def _post(url: str, name: str, body: bytes, kind: str) -> httpx.Response:
    return httpx.post(f"{url}/predict", files={"file": (name, body, kind)}, timeout=30)


def test_a_photo_gets_top_k_classes_probabilities_and_latency(server) -> None:
    response = _post(server, "chelsea.jpg", _photo(), "image/jpeg")
    assert response.status_code == 200, response.text
    body = response.json()
    classes = [p["class"] for p in body["predictions"]]
    assert sorted(classes) == ["cat", "dog"]  # top_k=3 of 2 classes: both
    probs = [p["probability"] for p in body["predictions"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
    assert body["latency_ms"] > 0 and body["filename"] == "chelsea.jpg"
    assert "gradcam" not in body
    explained = httpx.post(
        f"{server}/predict?explain=true",
        files={"file": ("chelsea.jpg", _photo(), "image/jpeg")},
        timeout=60,
    ).json()
    assert explained["predictions"] == body["predictions"]
    header, _, png = explained["gradcam"].partition(",")
    assert header == "data:image/png;base64"
    overlay = Image.open(io.BytesIO(base64.b64decode(png)))
    assert overlay.format == "PNG" and overlay.size[0] > 0


def test_bad_uploads_get_a_4xx_with_a_clear_message_and_the_server_lives_on(server) -> None:
    text = _post(server, "notes.txt", b"not an image\n", "text/plain")
    assert text.status_code == 415 and "not an image/* type" in text.json()["detail"]
    lying = _post(server, "fake.png", b"plain text pretending", "image/png")
    assert lying.status_code == 400 and "could not be decoded" in lying.json()["detail"]
    big = _post(server, "huge.png", b"\0" * (2 * 1024 * 1024), "image/png")
    assert big.status_code == 413 and "max_upload_mb=1" in big.json()["detail"]
    missing = httpx.post(f"{server}/predict", data={"other": "1"}, timeout=30)
    assert missing.status_code == 400 and "field 'file'" in missing.json()["detail"]
    assert _post(server, "chelsea.jpg", _photo(), "image/jpeg").status_code == 200
    index = httpx.get(server, timeout=30)
    assert index.status_code == 200 and "Drop an image" in index.text
    assert "http" not in index.text.split("<script>")[0].lower().replace("http-equiv", "")
    assert httpx.get(f"{server}/info", timeout=30).json()["classes"] == ["cat", "dog"]
    assert ServeSchema.host == "127.0.0.1"  # only this machine, unless host= says otherwise


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600
        )
    found = shutil.which("chromium")
    if not found:
        pytest.skip("headless Chromium is not installed and `apt-get install chromium` failed")
    return found


@pytest.mark.slow
def test_a_dropped_image_shows_a_class_name_in_headless_chromium(server, tmp_path) -> None:
    chromium = _chromium()
    done = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
            "--dump-dom", f"{server}/droptest",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = done.stdout
    assert 'class="name class-name">cat<' in dom or 'class="name class-name">dog<' in dom, (
        dom[-2000:] + done.stderr[-2000:]
    )
    assert "ms on the server" in dom
