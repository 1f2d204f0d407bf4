"""`ddpm serve` without a browser: request checking, the FIFO queue (order, positions, 429 when full), a failing job
leaving the server up, the PNGs' settings, and that the web UI draws the same images as `ddpm sample`."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import untrained_run, wait_for_job

from ddpm.api import load_run
from ddpm.common.errors import UserError
from ddpm.pictures.pngmeta import read_png_metadata as read_settings
from ddpm.serve import Limits, create_app, parse_request, resolve_request
from ddpm.serve.generate import Generation
from ddpm.serve.jobs import DONE, FAILED, JobQueue, QueueFull


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(untrained_run(tmp_path_factory.mktemp("serve") / "run"))


LOCAL = "http://127.0.0.1:7860"  # create_app's default Access: the loopback names on port 7860


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(run, "tiny"), base_url=LOCAL) as c:
        yield c


wait = wait_for_job


# ------------------------------------------------------------------------------------------------ request checking


@pytest.mark.parametrize("payload, needle", [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "x" * 201}, "at most 200"),
    ({"prompt": "cat", "n": 0}, "n must be from 1 to 64"),
    ({"prompt": "cat", "seed": "²"}, "seed must be a whole number"),
    ({"prompt": "cat", "steps": "9" * 5000}, "steps must be a whole number"),
    ({"prompt": "cat", "n": 65}, "n must be from 1 to 64"),
    ({"prompt": "cat", "n": 2.5}, "n must be a whole number"),
    ({"prompt": "cat", "n": True}, "n must be a whole number"),
    ({"prompt": "cat", "steps": 101}, "steps must be from 1 to 100"),
    ({"prompt": "cat", "guidance": -1}, "guidance must be from 0 to 20"),
    ({"prompt": "cat", "guidance": "much"}, "guidance must be a number"),
    ({"prompt": "cat", "seed": "abc"}, "seed must be a whole number"),
    ({"prompt": "cat", "seed": -3}, "seed must be from 0"),
    ({"prompt": "cat", "sampler": "euler"}, "sampler must be one of ddpm, ddim"),
    ({"prompt": "cat", "colour": "red"}, "unknown field(s) 'colour'"),
    ([1, 2], "JSON object"),
])
def test_bad_requests_are_refused_in_one_line(payload, needle):
    with pytest.raises(UserError) as e:
        parse_request(payload, Limits(max_steps=100))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_good_request_takes_defaults_and_accepts_numeric_text():
    r = parse_request({"prompt": " cat ", "n": "3", "guidance": "1.5", "seed": 7.0}, Limits(max_steps=20))
    assert (r.prompt, r.n, r.sampling.guidance, r.sampling.seed, r.sampling.steps, r.negative) == ("cat", 3, 1.5, 7, 20, "")


def test_resolve_request_names_indices_paraphrases_and_negatives(run):
    assert int(resolve_request(run, "Zebra").cond) == 9 and resolve_request(run, "2").label == "cat"
    puppy = resolve_request(run, "a puppy on the grass")  # not a class name: mapped by sentence similarity
    assert puppy.label == "dog" and 0.5 <= puppy.similarity < 1.0
    c = resolve_request(run, "cat", "dog")
    assert (int(c.cond), int(c.negative), c.negative_label) == (2, 4, "dog")
    with pytest.raises(UserError, match="'quantum chromodynamics' is far from everything this model knows; nearest: "):
        resolve_request(run, "quantum chromodynamics")
    with pytest.raises(UserError, match="the negative prompt .*matches no class"):
        resolve_request(run, "cat", "a tax return")
    with pytest.raises(UserError, match="same class"):
        resolve_request(run, "cat", "2")


def test_http_errors_are_json_lines(client):
    for body, status, needle in [
        ({"prompt": "quantum chromodynamics"}, 400, "It draws: bear, bird"),
        ({"prompt": "cat", "n": 100}, 400, "n must be from 1 to 64"),
    ]:
        r = client.post("/api/jobs", json=body)
        assert r.status_code == status and needle in r.json()["error"]
    r = client.post("/api/jobs", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = client.get("/api/jobs/nope")
    assert r.status_code == 404 and "no job 'nope'" in r.json()["error"]
    from ddpm.diffusion.sampling import SAMPLERS

    assert client.get("/api/info").json()["samplers"] == list(SAMPLERS)


# ---------------------------------------------------------------------------------------------------- generation


def test_generation_gives_grid_singles_and_settings(client, run):
    r = client.post("/api/jobs", json={"prompt": "cat", "n": 3, "steps": 4, "seed": 5, "sampler": "ddim"})
    assert r.status_code == 202
    status = wait(client, r.json()["id"])
    assert status["state"] == DONE and status["step"] == 4 and status["preview_version"] >= 1, status
    assert len(status["images"]) == 3
    grid = client.get(status["grid"] + "?download=1")
    assert grid.headers["content-type"] == "image/png"
    assert grid.headers["content-disposition"] == 'attachment; filename="cat-seed5-ddim4-grid.png"'
    settings = read_settings(grid.content)
    assert settings["prompt"] == "cat" and settings["seed"] == 5 and settings["steps"] == 4
    assert settings["sampler"] == "ddim" and settings["guidance"] == 3.0 and settings["checkpoint_step"] == run.step
    single = client.get(status["images"][2])
    assert read_settings(single.content)["index"] == 2
    assert client.get(f"/api/jobs/{status['id']}/preview.png").headers["content-type"] == "image/png"
    assert client.get(f"/api/jobs/{status['id']}/images/3.png").status_code == 404


def test_web_ui_draws_what_ddpm_sample_draws(client, run):
    """Image j of a request is seeded by (seed, j) as on the command line: the same pixels."""
    import io

    import numpy as np
    from PIL import Image

    from ddpm.common.pixels import to_uint8

    status = wait(client, client.post("/api/jobs", json={"prompt": "dog", "n": 2, "steps": 3, "seed": 11,
                                                        "sampler": "ddim"}).json()["id"])
    expected = to_uint8(run.sample("dog", 2, sampler="ddim", steps=3, guidance=3.0, seed=11))
    for j in range(2):
        with Image.open(io.BytesIO(client.get(status["images"][j]).content)) as im:
            got = np.asarray(im)
        k = got.shape[0] // 16
        np.testing.assert_array_equal(got[::k, ::k], expected[j, 0].numpy())


def test_negative_prompt_guides_away_from_its_class(run):
    """eps = eps_neg + w (eps_cond - eps_neg): with a negative class the images differ from plain guidance, and at
    w = 1 the negative class plays no part."""
    import io

    from PIL import Image

    from ddpm.diffusion.sampling import SamplingConfig
    from ddpm.serve.generate import generate
    from ddpm.serve.request import GenerateRequest

    def images(negative: str, w: float) -> bytes:
        req = GenerateRequest(prompt="cat", negative=negative, n=1, sampling=SamplingConfig(sampler="ddim", steps=3, guidance=w))
        png = generate(run, req, resolve_request(run, "cat", negative), "tiny").images[0]
        with Image.open(io.BytesIO(png)) as im:
            return im.tobytes()

    assert images("dog", 3.0) != images("", 3.0)
    assert images("dog", 1.0) == images("", 1.0)


# ------------------------------------------------------------------------------------------------------- queueing


class Gate:
    """A work function that blocks until released and records the order it ran jobs in."""

    def __init__(self) -> None:
        self.release, self.ran = threading.Event(), []

    def __call__(self, job):
        req, *_ = job.request
        self.ran.append(req.sampling.seed)
        if req.prompt == "bird":  # a job that breaks
            raise RuntimeError("boom\nsecond line")
        assert self.release.wait(30)
        return Generation(b"", [], {})


def test_queue_runs_fifo_reports_positions_and_refuses_overflow(run):
    gate = Gate()
    with TestClient(create_app(run, "tiny", max_waiting=2, work=gate), base_url=LOCAL) as c:
        ids = []
        for seed in range(3):  # the first runs, the next two wait
            r = c.post("/api/jobs", json={"prompt": "cat", "seed": seed})
            assert r.status_code == 202
            ids.append(r.json()["id"])
            if seed == 0:
                _until(lambda: c.get(f"/api/jobs/{ids[0]}").json()["state"] == "running")
        assert [c.get(f"/api/jobs/{i}").json()["position"] for i in ids] == [0, 1, 2]
        r = c.post("/api/jobs", json={"prompt": "cat", "seed": 99})
        assert r.status_code == 429 and "2 requests are already waiting" in r.json()["error"]
        gate.release.set()
        _until(lambda: all(c.get(f"/api/jobs/{i}").json()["state"] == "failed" or
                           c.get(f"/api/jobs/{i}").json()["state"] == "done" for i in ids))
        assert gate.ran == [0, 1, 2]


def test_a_failing_job_fails_alone_and_the_server_goes_on(run):
    gate = Gate()
    gate.release.set()
    with TestClient(create_app(run, "tiny", work=gate), base_url=LOCAL) as c:
        bad = c.post("/api/jobs", json={"prompt": "bird", "seed": 1}).json()["id"]
        good = c.post("/api/jobs", json={"prompt": "cat", "seed": 2}).json()["id"]
        _until(lambda: c.get(f"/api/jobs/{good}").json()["state"] == "done")
        failed = c.get(f"/api/jobs/{bad}").json()
        assert failed["state"] == "failed" and failed["error"] == "generation failed (RuntimeError: boom)"
        r = c.get(f"/api/jobs/{bad}/grid.png")
        assert r.status_code == 409 and "boom" in r.json()["error"]
        assert c.get("/api/info").status_code == 200


def test_job_queue_forgets_old_results():
    q = JobQueue(lambda job: job.request, max_waiting=10, keep_finished=2)
    jobs = [q.submit(i, total_steps=1) for i in range(4)]
    _until(lambda: all(j.state == DONE for j in jobs))
    _until(lambda: q.get(jobs[0].id) is None)
    assert q.get(jobs[1].id) is None and q.get(jobs[3].id).result == 3
    q.close()
    with pytest.raises(QueueFull):
        blocked = JobQueue(lambda job: time.sleep(5), max_waiting=1)
        blocked.submit(0, 1)
        _until(lambda: blocked.waiting() == 0)
        blocked.submit(1, 1)
        blocked.submit(2, 1)


def _until(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------------ the command


def test_ddpm_serve_prints_a_working_url_and_refuses_a_busy_port(tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import urllib.request

    run_dir = untrained_run(tmp_path / "run")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ddpm", "serve", "--checkpoint", str(run_dir), "--port", str(port),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"ddpm web UI: http://127.0.0.1:{port}/"), line + proc.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=30) as r:
            assert json.load(r)["classes"][2] == "cat"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert b'id="generate"' in r.read()
        busy = subprocess.run([sys.executable, "-m", "ddpm", "serve", "--checkpoint", str(run_dir), "--port",
                               str(port)], capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2 and "Traceback" not in busy.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and len(busy.stderr.strip().splitlines()) == 1
    finally:
        proc.terminate()
        proc.wait(30)
