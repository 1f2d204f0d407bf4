"""The web UI refuses what another web site could make a browser send (guard.py's threat model): a foreign Origin
(403), a Host that is not the server's (DNS rebinding, 403), a POST that is not application/json (415); it allows
its own page, --allow-origin, non-browser clients (no Origin) and a wildcard bind's IP addresses; it never sends CORS
headers and forbids framing. Then the real server over a socket, since TestClient sets Host itself."""

from __future__ import annotations

import http.client
import time

import pytest
from fastapi.testclient import TestClient
from helpers import serving, untrained_run

from ddpm.api import load_run
from ddpm.common.errors import UserError
from ddpm.serve import Access, create_app
from ddpm.serve.guard import parse_origin
from ddpm.serve.jobs import Job

OWN = "http://127.0.0.1:7860"
JOB = {"prompt": "cat", "steps": 1, "n": 1}


def _no_work(job: Job):  # the queue's work: these tests are about who may queue, not about drawing
    from ddpm.serve.generate import Generation
    request, *_ = job.request
    job.queue_log.append(request.prompt)
    return Generation(b"", [], {})


def ran(c: TestClient) -> list[str]:
    """The prompts the queue has run, in order, once a last "dog" job has run (FIFO: everything queued before it
    has run too)."""
    log = c.app.state.log
    job_id = c.post("/api/jobs", json={"prompt": "dog", "steps": 1, "n": 1}).json()["id"]
    end = time.monotonic() + 30
    while c.get(f"/api/jobs/{job_id}").json()["state"] != "done":
        assert time.monotonic() < end
        time.sleep(0.01)
    return log


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(untrained_run(tmp_path_factory.mktemp("guard") / "run"))


def client(run, access: Access | None = None, base_url: str = OWN) -> TestClient:
    log: list[str] = []

    def work(job: Job):
        job.queue_log = log
        return _no_work(job)

    app = create_app(run, "tiny", work=work, access=access)
    app.state.log = log
    return TestClient(app, base_url=base_url)


@pytest.mark.parametrize("origin", [
    "https://evil.example", "http://127.0.0.1:7861", "http://localhost.evil.example:7860", "null",
    "http://127.0.0.1:7860.evil.example",
])
def test_a_foreign_origin_is_refused_and_nothing_is_queued(run, origin):
    with client(run) as c:
        r = c.post("/api/jobs", json=JOB, headers={"Origin": origin})
        assert r.status_code == 403 and "--allow-origin" in r.json()["error"]
        assert c.get("/api/info", headers={"Origin": origin}).status_code == 403  # results are not read either
        assert ran(c) == ["dog"]


@pytest.mark.parametrize("host", ["evil.example:7860", "127.0.0.1:8000", "localhost", "attacker.127.0.0.1.nip.io:7860",
                                  "127.0.0.1:7860@evil", "[::1", ""])
def test_a_host_that_is_not_the_servers_is_refused(run, host):
    with client(run) as c:
        r = c.get("/api/info", headers={"Host": host})
        assert r.status_code == 403, host
        assert c.post("/api/jobs", json=JOB, headers={"Host": host}).status_code == 403
        assert ran(c) == ["dog"]


@pytest.mark.parametrize("base", ["http://127.0.0.1:7860", "http://localhost:7860", "http://[::1]:7860"])
def test_its_own_page_and_plain_clients_are_served(run, base):
    with client(run, base_url=base) as c:
        assert c.get("/api/info").status_code == 200  # curl, scripts: no Origin
        assert c.post("/api/jobs", json=JOB, headers={"Origin": base}).status_code == 202  # the page itself


def test_allow_origin_admits_that_site_only(run):
    access = Access.for_server("127.0.0.1", 7860, ("https://DDPM.example.org/",))
    with client(run, access) as c:
        assert c.post("/api/jobs", json=JOB, headers={"Origin": "https://ddpm.example.org"}).status_code == 202
        assert c.post("/api/jobs", json=JOB, headers={"Origin": "http://ddpm.example.org"}).status_code == 403
    with client(run, access, base_url="https://ddpm.example.org") as c:  # a proxy passing its public Host through
        assert c.get("/api/info").status_code == 200


def test_a_wildcard_bind_takes_any_ip_but_no_foreign_name(run):
    access = Access.for_server("0.0.0.0", 7860)
    with client(run, access, base_url="http://192.168.1.5:7860") as c:
        assert c.get("/api/info").status_code == 200
        assert c.get("/api/info", headers={"Host": "rebind.evil.example:7860"}).status_code == 403


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonp"])
def test_jobs_take_json_only(run, content_type):
    # a page on another site can send these three "simple" types without asking the server first (no CORS preflight)
    headers = {} if content_type is None else {"Content-Type": content_type}
    with client(run) as c:
        r = c.post("/api/jobs", content=b'{"prompt": "cat"}', headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["error"]
        assert ran(c) == ["dog"]
        r = c.post("/api/jobs", content=b'{"prompt": "cat", "n": 1}',
                   headers={"Content-Type": "Application/JSON; charset=utf-8"})
        assert r.status_code == 202


def test_no_cors_and_no_framing_on_any_response(run):
    with client(run) as c:
        for r in (c.get("/"), c.get("/api/info"), c.get("/api/jobs/none"),
                  c.get("/api/info", headers={"Origin": "https://evil.example"})):
            assert not any(k.lower().startswith("access-control-") for k in r.headers)
            assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        r = c.options("/api/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert r.status_code == 403


@pytest.mark.parametrize("text, origin", [
    ("https://DDPM.example.org/", "https://ddpm.example.org"),
    ("http://host:80", "http://host"),
    ("https://host:8443", "https://host:8443"),
    ("http://[::1]:7860", "http://[::1]:7860"),
])
def test_allow_origin_values_are_normalised(text, origin):
    assert parse_origin(text) == origin


@pytest.mark.parametrize("text", ["*", "example.org", "ftp://example.org", "https://example.org/path",
                                  "https://user@example.org", "http://host:99999", "https://", ""])
def test_bad_allow_origin_values_are_one_line_errors(text):
    with pytest.raises(UserError, match="is not an origin") as e:
        parse_origin(text)
    assert "\n" not in str(e.value)


def test_the_real_server_checks_the_host_header_it_receives(run):
    """Over a socket with raw Host headers, as a browser after DNS rebinding would send them."""
    def make_app(port: int):
        return create_app(run, "tiny", work=_no_work, access=Access.for_server("127.0.0.1", port))

    with serving(make_app) as url:
        port = int(url.rsplit(":", 1)[1])

        def get(host: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.putrequest("GET", "/api/info", skip_host=True)
            conn.putheader("Host", host)
            conn.endheaders()
            status = conn.getresponse().status
            conn.close()
            return status

        assert get(f"127.0.0.1:{port}") == 200 and get(f"localhost:{port}") == 200
        assert get(f"rebind.evil.example:{port}") == 403


def test_serve_refuses_a_bad_allow_origin_before_loading_the_model(tmp_path, capsys):
    from ddpm.cli import main

    code = main(["serve", "--checkpoint", str(tmp_path / "no-such-run"), "--allow-origin", "*"])
    err = capsys.readouterr().err
    assert code == 2 and "--allow-origin '*' is not an origin" in err and len(err.strip().splitlines()) == 1
