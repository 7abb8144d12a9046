"""Stage `fetch@<task>`: download a task's source file(s), or copy them from a local mirror,
into the task's own raw folder (data/raw/<task>/), each under the last part of its URL.

    python -m pipeline.stages.fetch <task>

Offline mode: set RB_OFFLINE_DIR to a folder holding the files (on the reference machine,
../shared/data). The stage then takes $RB_OFFLINE_DIR/<source.offline.filename> and verifies
it against source.offline.checksum, because a mirror may hold a re-pack with its own bytes.

The checksum is always verified. The folder is written under a temporary name and moved into
place only once every file matches, so a failed or partial transfer never becomes the output.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import urlparse

from tqdm import tqdm

from pipeline.config import ConfigError, load_task, stage_args
from pipeline.schema import SourceConfig
from pipeline.files import atomic_dir, atomic_path, file_digest
from pipeline.layout import source_name

log = logging.getLogger(__name__)

OFFLINE_ENV = "RB_OFFLINE_DIR"
CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A source that cannot be fetched or does not match its checksum."""


@dataclass(frozen=True)
class Location:
    """Where a file comes from, and the checksum that belongs to that copy."""

    uri: str
    checksum: str

    @property
    def is_remote(self) -> bool:
        return urlparse(self.uri).scheme in ("http", "https")

    @property
    def local_path(self) -> Path:
        parsed = urlparse(self.uri)
        return Path(parsed.path) if parsed.scheme == "file" else Path(self.uri)


def resolve_location(source: SourceConfig, offline_dir: str | None) -> Location:
    """Pick the official URL or, in offline mode, the mirror file with its own checksum."""
    if offline_dir and Location(source.url, source.checksum).is_remote:
        if source.offline is None:
            raise FetchError(f"{OFFLINE_ENV}={offline_dir} is set but source {source.url} has no "
                             "`offline` entry (filename and checksum of the local copy)")
        return Location(str(Path(offline_dir) / source.offline.filename), source.offline.checksum)
    return Location(source.url, source.checksum)


def verify_checksum(path: Path, expected: str, origin: str) -> None:
    algorithm, digest = expected.split(":", 1)
    found = file_digest(path, algorithm)
    if found != digest:
        raise FetchError(f"checksum mismatch for {origin}: expected {algorithm} {digest}, "
                         f"found {found}; the file is corrupt, truncated or a different version")


def _progress(total: int | None, desc: str) -> tqdm:
    # disable=None: tqdm stays quiet when stderr is not a terminal (DVC logs, CI).
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=None)


def _copy_stream(src: BinaryIO, dst: BinaryIO, update: Callable[[int], object]) -> None:
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        update(len(chunk))


def http_session(retries: int):
    """A requests session that retries connection errors and 429/5xx with backoff (urllib3)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET",))
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def download(url: str, target: Path, retries: int = 5, timeout: float = 60.0) -> None:
    """Stream `url` to `target`. A body cut short is retried from scratch, never kept."""
    import requests

    session = http_session(retries)
    for attempt in range(1, retries + 2):
        try:
            with session.get(url, stream=True, timeout=timeout) as response:
                response.raise_for_status()
                total = int(response.headers.get("Content-Length", 0)) or None
                written = 0
                with open(target, "wb") as out, _progress(total, target.name) as bar:
                    for chunk in response.iter_content(CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                if total is not None and written != total:
                    raise requests.exceptions.ContentDecodingError(
                        f"got {written} of {total} bytes")
                return
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            if attempt > retries:
                raise FetchError(f"download of {url} failed after {attempt} attempts: {exc}") from exc
            wait = 0.5 * 2 ** (attempt - 1)
            log.warning("download of %s interrupted (%s); retry %d/%d in %.1fs",
                        url, exc, attempt, retries, wait)
            time.sleep(wait)
        except requests.RequestException as exc:  # HTTP errors, retries used up by urllib3
            raise FetchError(f"download of {url} failed: {exc}") from exc


def copy_local(path: Path, target: Path) -> None:
    if not path.is_file():
        raise FetchError(f"local source {path} not found (expected a file)")
    with open(path, "rb") as src, open(target, "wb") as dst, \
            _progress(path.stat().st_size, target.name) as bar:
        _copy_stream(src, dst, bar.update)
        shutil.copystat(path, target)
    os.chmod(target, 0o644)  # a read-only mirror must not make the output read-only


def fetch(location: Location, target: str | Path) -> Path:
    """Fetch `location` into `target` atomically, verifying its checksum."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if location.is_remote:
            download(location.uri, tmp)
        else:
            copy_local(location.local_path, tmp)
        verify_checksum(tmp, location.checksum, location.uri)
    log.info("fetched %s -> %s (%s verified)", location.uri, target, location.checksum.split(":")[0])
    return target


def fetch_sources(sources: list[SourceConfig], raw_dir: str | Path, offline_dir: str | None) -> list[Path]:
    """Every source into `raw_dir` (replaced whole, only once all of them are fetched and verified)."""
    with atomic_dir(raw_dir) as tmp:
        for source in sources:
            fetch(resolve_location(source, offline_dir), tmp / source_name(source.url))
    return [Path(raw_dir) / source_name(source.url) for source in sources]


def main(argv: list[str] | None = None) -> int:
    (name,) = stage_args("pipeline.stages.fetch", ["task"], argv)
    try:
        _, task = load_task(name)
        fetch_sources(task.sources(), task.paths.raw, os.environ.get(OFFLINE_ENV))
    except (ConfigError, FetchError) as exc:
        print(f"fetch@{name}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
