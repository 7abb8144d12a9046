"""Labelled texts read from the files users have: CSV, TSV, JSON Lines, Parquet, a folder per
class, or `<label> <text>` lines; each from a folder or from inside a tar or zip archive.

A split's path is relative to the task's raw folder, and an archive is entered like a folder
(`aclImdb_v1.tar.gz/aclImdb/train`). Every archive is read once, in one pass, with every member
checked as a safe extraction would (no absolute paths, no `..`, no links out).

Bad input is one `TextsError` that names the file (and the line, member or column), what was
found and what was expected. Bytes that are not UTF-8 are refused, never guessed at.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from pipeline.data.texts_settings import TextRead

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# What reading a cut or damaged gzip/tar stream raises (gzip.BadGzipFile is an OSError).
DAMAGED_STREAM = (EOFError, OSError, tarfile.TarError, zlib.error)
CHUNK = 1 << 20
SEPARATORS = {"csv": ",", "tsv": "\t"}
LINE = re.compile(r"\s*(\S+)(?:\s+(.*\S))?\s*$", re.S)   # <label> <text>: the label ends at whitespace


class TextsError(ValueError):
    """Labelled texts that cannot be read as configured; the message says where and why."""


class DamagedSourceError(TextsError):
    """A fetched file that cannot be read to its end (a download cut short): fetch it again."""

    refetch = True   # the stage says how: delete the task's raw folder and re-run its fetch stage


@dataclass
class Texts:
    """The texts of one file or folder, in a stable order, with where each came from."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)   # empty for unlabelled texts
    where: list[str] = field(default_factory=list)    # "train.csv line 12", "aclImdb/test/pos/0_10.txt"


def natural_key(name: str) -> list:
    """File names in number order: 2_7.txt before 10_1.txt, whatever the archive's packing."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def is_archive(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES) or path.suffix == ".zip"


def decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TextsError(f"{where}: bytes that are not UTF-8 at line {line} (byte {exc.start}: "
                         f"{data[exc.start:exc.start + 4]!r}); expected UTF-8 text") from None


# ---- where a split is ----------------------------------------------------------------------------


def locate(raw: Path, path: str) -> tuple[Path, str | None]:
    """(the file or folder on disk, the path inside it when it is an archive, else None)."""
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or ".." in parts:
        raise TextsError(f"{path!r}: expected a path inside the task's raw folder {raw}")
    current = raw
    for depth, part in enumerate(parts):
        current = current / part
        if current.is_file():
            inner = "/".join(parts[depth + 1:])
            if inner and not is_archive(current):
                raise TextsError(f"{raw}/{path}: {current.name} is a file, not a folder or an archive (.tar*, .zip)")
            return current, inner or None
        if not current.exists():
            held = sorted(p.name for p in current.parent.iterdir()) if current.parent.is_dir() else []
            raise TextsError(f"{raw}/{path}: not found; {current.parent} holds {held}")
    return current, None


def check_member(name: str, archive: Path, member: tarfile.TarInfo | None = None) -> None:
    """Refuse absolute names, `..` escapes and links pointing outside the target folder."""
    if name.startswith("/") or PurePosixPath(name).is_absolute() or re.match(r"^[A-Za-z]:", name) \
            or ".." in PurePosixPath(name).parts:
        raise TextsError(f"{archive}: member {name!r} has an absolute or escaping path; refusing to read it")
    if member is not None:
        try:
            tarfile.data_filter(member, "/extract")   # the standard library's checks for links
        except tarfile.FilterError as exc:
            raise TextsError(f"{archive}: member {name!r} is unsafe ({exc}); refusing to read it") from None


def damaged(archive: Path, exc: BaseException) -> DamagedSourceError:
    return DamagedSourceError(f"{archive}: the archive is truncated or corrupt ({type(exc).__name__}: {exc})")


def archive_members(archive: Path, wanted) -> dict[str, bytes]:
    """{member name: bytes} of the archive's regular files for which `wanted(name)` holds, in one pass."""
    found = {}
    if archive.suffix == ".zip":
        try:
            with zipfile.ZipFile(archive) as package:
                for info in package.infolist():
                    check_member(info.filename, archive)
                    if not info.is_dir() and wanted(info.filename):
                        found[info.filename] = package.read(info)
        except (zipfile.BadZipFile, *DAMAGED_STREAM) as exc:
            raise damaged(archive, exc) from None
        return found
    try:
        tar = tarfile.open(archive, "r:*")
    except (EOFError, zlib.error) as exc:   # a gzip stream that ends inside the first tar block
        raise damaged(archive, exc) from None
    except (tarfile.TarError, OSError) as exc:
        raise DamagedSourceError(f"{archive}: cannot open as a tar archive ({exc})") from None
    with tar:
        try:
            for member in tar:
                check_member(member.name, archive, member)
                if member.isfile() and wanted(member.name):
                    found[member.name] = tar.extractfile(member).read()
            # tarfile stops at its end-of-archive block and a damaged header can look like one;
            # reading on to the end makes gzip check its CRC and length.
            while tar.fileobj.read(CHUNK):
                pass
        except DAMAGED_STREAM as exc:   # a stream cut short only shows up once it is read
            raise damaged(archive, exc) from None
    return found


def disk_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- one split -----------------------------------------------------------------------------------


def from_folders(files: dict[str, bytes], where: str, read: TextRead, labelled: bool) -> Texts:
    """`files` by path relative to the split's folder: <label>/<name> (labelled) or <name>."""
    rows = []
    wanted = None if read.labels is None else {str(label) for label in read.labels}
    for name, data in files.items():
        parts = PurePosixPath(name).parts
        if not fnmatch(parts[-1], read.pattern) or len(parts) != (2 if labelled else 1):
            continue
        label = parts[0] if labelled else ""
        if wanted is None or label in wanted or not labelled:
            rows.append((label, natural_key(parts[-1]), f"{where}/{name}", data))
    if not rows:
        layout = f"{where}/<label>/{read.pattern}" if labelled else f"{where}/{read.pattern}"
        raise TextsError(f"{where}: no texts found; expected files like {layout}")
    order = {str(label): i for i, label in enumerate(read.labels or sorted({r[0] for r in rows}))}
    rows.sort(key=lambda r: (order.get(r[0], -1), r[1]))
    return Texts([decode(r[3], r[2]) for r in rows], [r[0] for r in rows] if labelled else [], [r[2] for r in rows])


def column(frame, key: str | int, where: str, setting: str):
    if isinstance(key, int):
        if key >= frame.shape[1]:
            raise TextsError(f"{where}: no column {key} (0-based); the file has {frame.shape[1]} columns; "
                             f"set prepare.read.{setting}")
        return frame.iloc[:, key]
    if key not in frame.columns:
        raise TextsError(f"{where}: no column {key!r}; the columns are {[str(c) for c in frame.columns]}; "
                         f"set prepare.read.{setting}")
    return frame[key]


def from_table(frame, where: str, read: TextRead, labelled: bool, first_line: int) -> Texts:
    texts = column(frame, read.text, where, "text")
    labels = column(frame, read.label, where, "label") if labelled else None
    out = Texts()
    for row, text in enumerate(texts.tolist()):
        line = f"{where} {'line' if first_line else 'row'} {row + first_line}"
        if not isinstance(text, str):
            raise TextsError(f"{line}: the text is {text!r}; expected a string")
        out.texts.append(text)
        out.where.append(line)
        if labelled:
            label = labels.iat[row]
            if label is None or (isinstance(label, str) and not label.strip()) or label != label:   # NaN
                raise TextsError(f"{line}: no label; expected one in column {read.label!r}")
            out.labels.append(str(label).strip())
    return out


def read_table(data: bytes, where: str, read: TextRead, labelled: bool) -> Texts:
    import pandas as pd

    if read.format == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:   # pyarrow's errors have no common base
            raise TextsError(f"{where}: not a Parquet file ({type(exc).__name__}: {exc})") from None
        return from_table(frame, where, read, labelled, first_line=0)
    text = decode(data, where)
    if read.format == "jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TextsError(f"{where} line {number}: not JSON ({exc.msg}); expected one object per line") from None
            if not isinstance(record, dict):
                raise TextsError(f"{where} line {number}: found {type(record).__name__}; expected an object")
            records.append((number, record))
        keys = [read.text] + ([read.label] if labelled else [])
        for number, record in records:
            missing = [key for key in keys if key not in record]
            if missing:
                raise TextsError(f"{where} line {number}: no field {missing[0]!r}; the fields are {sorted(record)}")
        out = Texts()
        for number, record in records:
            out.texts.append(record[read.text])
            out.where.append(f"{where} line {number}")
            if labelled:
                out.labels.append(str(record[read.label]))
        bad = [(w, t) for w, t in zip(out.where, out.texts) if not isinstance(t, str)]
        if bad:
            raise TextsError(f"{bad[0][0]}: the text is {bad[0][1]!r}; expected a string")
        return out
    if read.format == "lines":
        out = Texts()
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            match = LINE.match(line)
            label, body = (match.group(1), match.group(2) or "") if labelled else ("", line)
            out.texts.append(body)
            out.labels.extend([label] if labelled else [])
            out.where.append(f"{where} line {number}")
        return out
    separator = read.separator or SEPARATORS[read.format]
    try:
        frame = pd.read_csv(io.StringIO(text), sep=separator, header=0 if read.header else None, dtype=str,
                            keep_default_na=False, quoting=3 if read.format == "tsv" else 0)
    except pd.errors.ParserError as exc:
        raise TextsError(f"{where}: not {read.format.upper()} ({exc})") from None
    except pd.errors.EmptyDataError:
        raise TextsError(f"{where}: no rows; the file is empty") from None
    return from_table(frame, where, read, labelled, first_line=2 if read.header else 1)


def read_texts(raw: str | Path, read: TextRead) -> dict[str, Texts | None]:
    """{train, test, val, unlabelled} as `read.files` names them (None where it names none);
    each archive read once for all of them."""
    raw = Path(raw)
    wanted = {split: path for split, path in read.files.model_dump().items() if path is not None}
    located = {split: locate(raw, path) for split, path in wanted.items()}
    members: dict[Path, dict[str, bytes]] = {}
    for archive in {file for file, inner in located.values() if inner is not None}:
        prefixes = [inner for file, inner in located.values() if file == archive]
        members[archive] = archive_members(archive, lambda name: any(
            name == p or name.startswith(p.rstrip("/") + "/") for p in prefixes))
    found: dict[str, Texts | None] = dict.fromkeys(("train", "test", "val", "unlabelled"))
    for split, (file, inner) in located.items():
        where = f"{file}/{inner}" if inner else str(file)
        labelled = split != "unlabelled"
        if inner is not None and inner in members[file]:
            if read.format == "folders":
                raise TextsError(f"{where}: a file; format folders reads a folder per class")
            texts = read_table(members[file][inner], where, read, labelled)
        elif inner is not None:
            prefix = inner.rstrip("/") + "/"
            files = {n[len(prefix):]: d for n, d in members[file].items() if n.startswith(prefix)}
            if not files:
                raise TextsError(f"{where}: not in the archive; expected a member or folder of that name")
            texts = from_folders(files, where, read, labelled) if read.format == "folders" else None
            if texts is None:
                raise TextsError(f"{where}: a folder in the archive; format {read.format} reads a file")
        elif file.is_dir():
            if read.format != "folders":
                raise TextsError(f"{where}: a folder; format {read.format} reads a file (or use format: folders)")
            texts = from_folders(disk_files(file), where, read, labelled)
        else:
            if read.format == "folders":
                raise TextsError(f"{where}: a file; format folders reads a folder per class")
            texts = read_table(file.read_bytes(), where, read, labelled)
        if not texts.texts:
            raise TextsError(f"{where}: no rows; expected at least one text")
        found[split] = texts
    return found
