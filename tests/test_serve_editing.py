"""The web UI's image to image and inpainting: an uploaded image (base64 in the JSON request) edited through the
same API as `ddpm edit` / `ddpm inpaint` (the same pixels), the settings and the upload's SHA-256 in every PNG, the
known pixels kept exactly, and bad uploads refused with a one-line 400 before anything is queued."""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import untrained_run, wait_for_job
from PIL import Image

from ddpm.api import load_run
from ddpm.common.pixels import to_uint8
from ddpm.pictures.pngmeta import read_png_metadata
from ddpm.serve import create_app
from ddpm.serve.jobs import DONE

LOCAL = "http://127.0.0.1:7860"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(untrained_run(tmp_path_factory.mktemp("serve-edit") / "run"))


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(run, "tiny"), base_url=LOCAL) as c:
        yield c


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


IMAGE = png(np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8))
HALF = np.zeros((32, 32), np.uint8)
HALF[:, 16:] = 255  # generate the right half


wait = wait_for_job


def pixels(client: TestClient, url: str) -> np.ndarray:
    """A single download, back at the model's 16 px (downloads are upscaled by nearest neighbour)."""
    with Image.open(io.BytesIO(client.get(url).content)) as im:
        got = np.asarray(im)
    k = got.shape[0] // 16
    return got[::k, ::k]


def test_edit_draws_what_the_api_draws_and_records_the_upload(client, run):
    status = wait(client, client.post("/api/jobs", json={
        "prompt": "dog", "mode": "edit", "image": data_url(IMAGE), "strength": 0.5, "n": 2, "steps": 6,
        "sampler": "ddim", "seed": 4}).json()["id"])
    assert status["state"] == DONE and status["steps"] == 3, status  # round(0.5 x 6) steps
    expected = to_uint8(run.edit(IMAGE, "dog", 2, 0.5, sampler="ddim", steps=6, seed=4).images)
    for j in range(2):
        np.testing.assert_array_equal(pixels(client, status["images"][j]), expected[j, 0].numpy())
    settings = read_png_metadata(client.get(status["grid"]).content)
    assert settings["mode"] == "edit" and settings["strength"] == 0.5
    assert settings["input_sha256"] == [hashlib.sha256(IMAGE).hexdigest()]


def test_inpaint_keeps_the_known_pixels(client, run):
    status = wait(client, client.post("/api/jobs", json={
        "prompt": "cat", "mode": "inpaint", "image": data_url(IMAGE), "mask": data_url(png(HALF)), "n": 2,
        "steps": 4}).json()["id"])
    assert status["state"] == DONE, status
    known = run.read_image(IMAGE)[0][0].numpy()
    for j in range(2):
        assert (pixels(client, status["images"][j])[:, :8] == known[:, :8]).all()
    assert read_png_metadata(client.get(status["images"][0]).content)["mode"] == "inpaint"


@pytest.mark.parametrize("fields,needle", [
    ({"mode": "edit"}, "image is missing"),
    ({"mode": "edit", "image": "not base64!"}, "not base64"),
    ({"mode": "edit", "image": data_url(b"not an image")}, "cannot read image"),
    ({"mode": "edit", "image": data_url(IMAGE), "strength": 1.5}, "strength must be from 0 to 1"),
    ({"mode": "edit", "image": data_url(IMAGE), "strength": -0.2}, "strength must be from 0 to 1"),
    ({"mode": "inpaint", "image": data_url(IMAGE)}, "mask is missing"),
    ({"mode": "inpaint", "image": data_url(IMAGE), "mask": data_url(png(np.zeros((32, 32), np.uint8)))},
     "marks nothing"),
    ({"mode": "inpaint", "image": data_url(IMAGE), "mask": data_url(png(np.zeros((20, 32), np.uint8)))},
     "32x20 pixels but the image is 32x32"),
    ({"mode": "paint"}, "mode must be one of generate, edit, inpaint"),
])
def test_bad_uploads_are_one_line_400s(client, fields, needle):
    waiting = client.get("/api/info").json()["waiting"]
    r = client.post("/api/jobs", json={"prompt": "cat", **fields})
    assert r.status_code == 400 and needle in r.json()["error"] and "\n" not in r.json()["error"], r.json()
    assert client.get("/api/info").json()["waiting"] == waiting  # nothing queued


def test_the_page_starts_with_the_libraries_strength(client):
    from ddpm.diffusion.sampling import DEFAULT_STRENGTH

    defaults = client.get("/api/info").json()["defaults"]
    assert defaults["strength"] == DEFAULT_STRENGTH and defaults["mode"] == "generate"
