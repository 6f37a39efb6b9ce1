"""Writing and locating webdataset tar shards.

A shard is a plain POSIX tar whose members are grouped into samples by their name up to the first dot
(``000042.png`` + ``000042.cls`` form sample ``000042``), the layout read by ``webdataset``. The writer here fixes
every header field (mtime, uid/gid, names, mode) and the member order, so the same input always produces the same
bytes — shards can be checksummed and cached.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["INDEX_FILE", "ShardWriter", "expand_urls", "indexed_samples", "read_classes", "truncation", "write_classes"]

logger = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{index:06d}.tar"
#: ``{"shards": {file name: samples}}`` beside the shards: lets readers count what a damaged shard lost
INDEX_FILE = "shards.json"
#: a complete tar ends with two zero blocks (tarfile, GNU tar and webdataset's writer all write them)
_END_OF_ARCHIVE = b"\0" * 1024


class ShardWriter:
    """Write samples into numbered tar shards ``OUT/shard-000000.tar``, ``shard-000001.tar``, ...

    A new shard starts when the current one holds ``max_count`` samples or would exceed ``max_bytes``. Each shard is
    written to ``*.tar.tmp`` and renamed when complete, so a crashed run never leaves a truncated ``.tar`` behind.

    Example::

        with ShardWriter(out_dir, max_count=1000) as writer:
            writer.write("000000", {"png": png_bytes, "cls": b"3"})
    """

    def __init__(self, out_dir: str | Path, *, max_count: int = 10_000, max_bytes: int = 1 << 30) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(f"max_count and max_bytes must be positive, got {max_count} and {max_bytes}")
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            from varkit.errors import DataSetupError

            raise DataSetupError(f"cannot write shards to {out_dir}: it (or a folder above it) is a file") from None
        except PermissionError as err:
            from varkit.errors import DataSetupError

            raise DataSetupError(f"cannot write shards to {out_dir}: {err.strerror}") from None
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.paths: list[Path] = []
        self.counts: dict[str, int] = {}
        self.samples_written = 0
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._bytes = 0

    def _open_next(self) -> None:
        self._close_current()
        path = self.out_dir / SHARD_PATTERN.format(index=len(self.paths))
        self.paths.append(path)
        # USTAR headers have no pax timestamps/atime fields, which keeps output bytes a pure function of the input.
        self._tar = tarfile.open(str(path) + ".tmp", mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self._count = 0
        self._bytes = 0

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            path = self.paths[-1]
            os.replace(str(path) + ".tmp", path)
            logger.debug("wrote %s (%d samples)", path, self._count)
            self._tar = None
            self.counts[path.name] = self._count
            self._write_index()

    def _write_index(self) -> None:
        index = self.out_dir / INDEX_FILE
        shards: dict[str, int] = {}
        if index.is_file():  # several writers may fill one folder (other splits' writers use their own)
            try:
                shards = dict(json.loads(index.read_text()).get("shards", {}))
            except (ValueError, AttributeError):
                shards = {}
        shards.update(self.counts)
        tmp = index.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"shards": dict(sorted(shards.items()))}, indent=1) + "\n")
        os.replace(tmp, index)

    def write(self, key: str, fields: Mapping[str, bytes]) -> None:
        """Append one sample; ``fields`` maps extensions (``"png"``, ``"cls"``, ``"tokens.npy"``) to bytes."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/' (webdataset splits names at the dot)")
        size = sum(512 + -(-len(v) // 512) * 512 for v in fields.values())
        if self._tar is None or self._count >= self.max_count or (self._count and self._bytes + size > self.max_bytes):
            self._open_next()
        assert self._tar is not None
        for ext in sorted(fields):
            data = fields[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._bytes += size
        self.samples_written += 1

    def close(self) -> None:
        self._close_current()
        self._remove_stale()

    def _remove_stale(self) -> None:
        """Numbered shards of an earlier, longer write into the same folder would otherwise be read as part of this
        data set (the first ones were just overwritten): remove them, and say so."""
        written = {p.name for p in self.paths}
        stale = [
            p for p in sorted(self.out_dir.glob("shard-[0-9][0-9][0-9][0-9][0-9][0-9].tar")) if p.name not in written
        ]
        if not stale or not written:
            return
        logger.warning(
            "removing %d stale shard(s) of an earlier write from %s: %s", len(stale), self.out_dir, stale[0].name
        )
        for path in stale:
            path.unlink()
            self.counts.pop(path.name, None)
        index = self.out_dir / INDEX_FILE
        if index.is_file():
            try:
                shards = dict(json.loads(index.read_text()).get("shards", {}))
            except (ValueError, AttributeError):
                shards = {}
            for path in stale:
                shards.pop(path.name, None)
            index.write_text(json.dumps({"shards": dict(sorted(shards.items()))}, indent=1) + "\n")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_remote(url: str) -> bool:
    return url.startswith("pipe:") or ("://" in url and not url.startswith("file://"))


def expand_urls(urls: str | Path | Sequence[str | Path]) -> list[str]:
    """Turn a shard specification into a list of URLs, every local one an existing file.

    Accepts a brace pattern (``data/shard-{000000..000009}.tar``), a glob (``data/shard-*.tar``), a directory (all
    ``*.tar`` inside, sorted), a single path, a ``pipe:`` command or remote URL (passed through), ``::``-separated
    combinations of these, or a list of any of them (each element expanded; webdataset itself does not expand
    braces inside lists). A local pattern matching no file, a missing file or a folder without shards is a
    :class:`~varkit.errors.DataSetupError` naming it: a reader given no data would otherwise wait for samples that
    never come.
    """
    from webdataset.shardlists import expand_urls as expand_braces

    from varkit.errors import DataSetupError

    if isinstance(urls, (str, Path)):
        urls = [str(urls)]
    if not isinstance(urls, Sequence) or isinstance(urls, (bytes, bytearray)):
        raise DataSetupError(f"shard URLs must be a path, a pattern or a list of them, got {urls!r}")
    result: list[str] = []
    for spec in urls:
        if not isinstance(spec, (str, Path)):
            raise DataSetupError(f"shard URLs must be strings, got {spec!r} in {urls!r}")
        expanded = expand_braces(str(spec))
        missing: list[str] = []
        for url in expanded:
            if _is_remote(url):
                result.append(url)
                continue
            local = url.removeprefix("file://")
            if os.path.isdir(local):
                found = sorted(str(p) for p in Path(local).glob("*.tar"))
                if not found:
                    raise DataSetupError(f"the shard folder {local} holds no .tar shards")
                result.extend(found)
            elif glob.has_magic(local):
                found = sorted(p for p in glob.glob(local) if os.path.isfile(p))
                if not found:
                    raise DataSetupError(f"the shard pattern {local!r} matches no file")
                result.extend(found)
            elif os.path.isfile(local):
                result.append(local)
            else:
                missing.append(local)
        if missing:
            more = f" (and {len(missing) - 1} more of the {len(expanded)} it names)" if len(missing) > 1 else ""
            raise DataSetupError(f"the shard {missing[0]} does not exist{more}; check the path or pattern {spec!s}")
    return result


def indexed_samples(url: str) -> int | None:
    """The number of samples ``url``'s folder index (``shards.json``) records for it, if any."""
    path = Path(url)
    index = path.parent / INDEX_FILE
    if not index.is_file():
        return None
    try:
        value = json.loads(index.read_text()).get("shards", {}).get(path.name)
    except (ValueError, AttributeError, OSError):
        return None
    return int(value) if isinstance(value, int) else None


def truncation(url: str) -> str | None:
    """Why local shard ``url`` is incomplete (no end-of-archive blocks: cut anywhere, even at a header boundary,
    where tar readers stop silently), or ``None`` when it ends like a complete tar (remote URLs: ``None``)."""
    if _is_remote(url):
        return None
    local = url.removeprefix("file://")
    try:
        size = os.path.getsize(local)
        with open(local, "rb") as handle:
            handle.seek(max(size - len(_END_OF_ARCHIVE), 0))
            tail = handle.read()
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if size == 0:
        return "empty (0 bytes)"
    if size % 512 or tail != _END_OF_ARCHIVE:
        return f"truncated ({size} bytes, no end-of-archive marker)"
    return None


def write_classes(out_dir: str | Path, classes: Sequence[str]) -> Path:
    """Write ``classes.json`` (class name → index, in index order) into ``out_dir``."""
    path = Path(out_dir) / "classes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: index for index, name in enumerate(classes)}, indent=1) + "\n")
    return path


def read_classes(path: str | Path) -> list[str]:
    """Read a ``classes.json`` written by :func:`write_classes` (or a directory holding one); names by index."""
    path = Path(path)
    if path.is_dir():
        path = path / "classes.json"
    mapping = json.loads(path.read_text())
    return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
