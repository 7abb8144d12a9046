"""fetch: checksum always verified, retries on transient errors, no partial output, offline mode."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from pipeline.schema import OfflineSource, SourceConfig
from pipeline.stages.fetch import FetchError, Location, fetch, resolve_location

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    path = tmp_path / "mirror" / "data.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_local_copy_with_matching_checksum(source_file, tmp_path):
    target = tmp_path / "out" / "data.bin"
    fetch(Location(str(source_file), sha256(PAYLOAD)), target)
    assert target.read_bytes() == PAYLOAD
    assert leftovers(target.parent) == ["data.bin"]


def test_md5_checksums_are_verified_too(source_file, tmp_path):
    good = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    fetch(Location(f"file://{source_file}", good), tmp_path / "a.bin")
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch(Location(str(source_file), "md5:" + "0" * 32), tmp_path / "b.bin")


def test_checksum_mismatch_is_an_error_and_leaves_nothing(source_file, tmp_path):
    out = tmp_path / "out"
    wrong = "sha256:" + "0" * 64
    with pytest.raises(FetchError) as caught:
        fetch(Location(str(source_file), wrong), out / "data.bin")
    message = str(caught.value)
    assert str(source_file) in message and "0" * 64 in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message  # what was found
    assert leftovers(out) == []


def test_missing_local_source_is_named(tmp_path):
    with pytest.raises(FetchError, match=r"nowhere\.csv not found"):
        fetch(Location(str(tmp_path / "nowhere.csv"), sha256(b"")), tmp_path / "x.csv")


def test_offline_mode_takes_the_mirror_file_with_its_own_checksum(tmp_path):
    source = SourceConfig(url="https://example.org/a.tar.gz", checksum="md5:" + "1" * 32,
                          offline=OfflineSource(filename="a-repack.tar.gz", checksum=sha256(b"x")))
    assert resolve_location(source, None) == Location(source.url, source.checksum)
    assert resolve_location(source, str(tmp_path)) == Location(str(tmp_path / "a-repack.tar.gz"), sha256(b"x"))


def test_offline_mode_without_a_mirror_entry_is_a_clear_error(tmp_path):
    source = SourceConfig(url="https://example.org/a.csv", checksum=sha256(b"x"))
    with pytest.raises(FetchError, match="has no `offline` entry"):
        resolve_location(source, str(tmp_path))


def test_offline_mode_leaves_local_sources_alone(tmp_path):
    source = SourceConfig(url="/data/series.csv", checksum=sha256(b"x"))
    assert resolve_location(source, str(tmp_path)).uri == "/data/series.csv"


# ---- a real HTTP server on 127.0.0.1 ---------------------------------------------------


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD after `failures` bad answers: 503s or bodies cut short."""

    mode = "ok"
    failures = 0
    requests = 0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        cls = type(self)
        cls.requests += 1
        if self.path != "/data.bin":
            self.send_error(404)
            return
        failing = cls.requests <= cls.failures
        if failing and cls.mode == "503":
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if failing and cls.mode == "truncate":
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (FlakyHandler,), {"requests": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("mode, failures, requests", [
    pytest.param("ok", 0, 1, id="on-the-first-try"),
    pytest.param("503", 2, 3, id="after-transient-server-errors-are-retried"),
    pytest.param("truncate", 1, 2, id="after-a-body-cut-short-is-retried-and-never-kept"),
])
def test_a_download_is_verified_and_written(server, tmp_path, mode, failures, requests):
    handler, base = server
    handler.mode, handler.failures = mode, failures
    fetch(Location(f"{base}/data.bin", sha256(PAYLOAD)), tmp_path / "data.bin")
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert handler.requests == requests
    assert leftovers(tmp_path) == ["data.bin"]  # no partial body left beside it


def test_a_download_that_keeps_failing_leaves_no_output(server, tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    handler, base = server
    handler.mode, handler.failures = "truncate", 100
    out = tmp_path / "out"
    with pytest.raises(FetchError, match="failed after"):
        fetch(Location(f"{base}/data.bin", sha256(PAYLOAD)), out / "data.bin")
    assert leftovers(out) == []


def test_http_not_found_is_a_clear_error(server, tmp_path):
    _, base = server
    with pytest.raises(FetchError, match="404"):
        fetch(Location(f"{base}/missing.bin", sha256(PAYLOAD)), tmp_path / "x.bin")
