"""`visec serve`'s app through Starlette's test client: routes, every bad-input class, the bounded
pool, temporary uploads removed, and 20 parallel requests answered correctly."""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient

from visec.apps.analyze import Analyzer, json_schema
from visec.apps.serve import create_app


@pytest.fixture(scope="module")
def analyzer(tiny_runs):
    return Analyzer.from_runs(tiny_runs, frames=4)


@pytest.fixture(scope="module")
def client(analyzer):
    with TestClient(create_app(analyzer, max_bytes=2_000_000, workers=2, queue=32)) as c:
        yield c


def _post(client, content: bytes, name: str = "x.png", **params):
    return client.post("/api/analyze", content=content, params=params,
                       headers={"X-Filename": name, "Content-Type": "application/octet-stream"})


def _uploads() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("visec-upload-*")}


def test_pages_and_json_routes(client):
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "classifier/tiny_cnn" in page.text
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["detectors"] == 1 and health["capacity"] == 34
    models = client.get("/api/models").json()
    assert models["detectors"][0]["name"] == "classifier/tiny_cnn" and models["detectors"][0]["threshold"] > 0
    spec = client.get("/openapi.json").json()
    assert {"/api/analyze", "/api/health", "/api/models"} <= set(spec["paths"])
    assert "application/octet-stream" in spec["paths"]["/api/analyze"]["post"]["requestBody"]["content"]


def test_analyze_image_json_and_html(client, media):
    before = _uploads()
    r = _post(client, (media / "face.png").read_bytes(), "face.png")
    assert r.status_code == 200, r.text
    data = r.json()
    jsonschema.validate(data, json_schema())
    assert data["input"]["name"] == "face.png" and data["input"]["path"] == "face.png"  # no server path leaks
    assert len(data["faces"]) == 1 and data["ensemble"]["voters"] == 1
    html = _post(client, (media / "face.png").read_bytes(), "face.png", view="html")
    assert html.status_code == 200 and 'class="saliency"' in html.text and 'id="verdict"' in html.text
    assert _uploads() == before  # the temporary upload folders are gone after the answer


def test_video_upload(client, media):
    r = _post(client, (media / "clip.mp4").read_bytes(), "clip.mp4")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["input"]["media"] == "video" and len(data["input"]["frames_sampled"]) == 4


@pytest.mark.parametrize("name", ["empty.png", "notes.png", "truncated.png", "bomb.png", "broken.mp4", "tiny.png"])
def test_bad_input_gets_a_4xx_json_error_and_the_server_goes_on(client, bad_files, media, name):
    content, status, phrase = bad_files[name]
    before = _uploads()
    r = _post(client, content, name)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and phrase in body["error"] and "Traceback" not in body["error"]
    assert "/tmp" not in body["error"]  # messages name the upload, not the server's files
    assert _uploads() == before
    assert _post(client, (media / "face.png").read_bytes(), "face.png").status_code == 200


def test_size_limit_while_streaming(analyzer, media):
    """Over the limit: 413 from the declared length, and also when the body arrives in chunks with
    no length (the count runs while streaming)."""
    with TestClient(create_app(analyzer, max_bytes=10_000)) as small:
        content = (media / "face.png").read_bytes()
        assert len(content) > 10_000
        r = _post(small, content, "face.png")
        assert r.status_code == 413 and "limit of 10,000 bytes" in r.json()["error"]

        def chunks():
            for i in range(0, len(content), 4096):
                yield content[i:i + 4096]

        r = small.post("/api/analyze", content=chunks(), headers={"X-Filename": "face.png"})
        assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_no_face_is_200_with_no_face_verdict(client, media):
    r = _post(client, (media / "noise.png").read_bytes(), "noise.png")
    assert r.status_code == 200 and r.json()["ensemble"]["verdict"] == "no face"


def test_twenty_parallel_requests(client, media):
    face, noise = (media / "face.png").read_bytes(), (media / "noise.png").read_bytes()
    expected = _post(client, face, "face.png").json()["detector_verdicts"][0]["prob"]
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda k: _post(client, face if k % 2 == 0 else noise, f"{k}.png"), range(20)))
    assert all(r.status_code == 200 for r in replies)
    for k, r in enumerate(replies):
        data = r.json()
        assert data["input"]["name"] == f"{k}.png"
        if k % 2 == 0:
            assert data["detector_verdicts"][0]["prob"] == pytest.approx(expected, abs=1e-6)
        else:
            assert data["ensemble"]["verdict"] == "no face"
    assert client.get("/api/health").json()["in_flight"] == 0


def test_the_pool_is_bounded(analyzer, media, monkeypatch):
    """One worker and no waiting line: a second analysis while one runs gets 503 at once, and the
    health check answers while the worker is busy (a slow analysis never blocks the app)."""
    release, started = threading.Event(), threading.Event()
    real = analyzer.analyze

    def slow(*args, **kw):
        started.set()
        release.wait(30)
        return real(*args, **kw)

    monkeypatch.setattr(analyzer, "analyze", slow)
    face = (media / "face.png").read_bytes()
    with TestClient(create_app(analyzer, workers=1, queue=0)) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, c, face, "a.png")
        assert started.wait(30)
        assert c.get("/api/health").json()["in_flight"] == 1
        busy = _post(c, face, "b.png")
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        release.set()
        assert first.result(60).status_code == 200
        assert c.get("/api/health").json()["rejected"] == 1


def test_bad_parameters_are_4xx(client, media):
    r = _post(client, (media / "face.png").read_bytes(), "face.png", view="pdf")
    assert r.status_code == 422 and "view" in r.json()["error"]
    r = client.post("/api/analyze", content=b"x", headers={"Content-Length": "abc"})
    assert 400 <= r.status_code < 500


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP",
         b"RIFF\x00\x00\x00\x00AVI ", b"\x00\x00\x00\x18ftypmp42", b"\x1a\x45\xdf\xa3"]


def test_arbitrary_bytes_never_give_a_server_error(client, media):
    """Generated uploads (each known magic number, or none, followed by random bytes, or by a cut
    of a real file): the answer is 200 or a 4xx JSON error with one line, never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    real = (media / "face.png").read_bytes()

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.sampled_from(MAGIC), st.binary(max_size=600), st.integers(0, len(real)), st.booleans())
    def check(magic, tail, cut, from_real):
        content = real[:cut] if from_real else magic + tail
        r = _post(client, content, "fuzz.bin")
        assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        if r.status_code != 200:
            assert "\n" not in r.json()["error"]

    check()
    assert client.get("/api/health").json()["status"] == "ok"
