"""MXNet RecordIO (`train.rec` + `train.idx`) without mxnet.

`.idx`: text lines `key<TAB>offset`. `.rec`: per record uint32 magic 0xced7230a, uint32 lrecord
(upper 3 bits continuation flag, lower 29 bits length), payload, zero padding to 4 bytes.
Payload: header `<IfQQ` (flag, label, id, id2); when flag > 0, `flag` float32 labels follow
(the class is the first); then the encoded image. InsightFace files start with a header record
0 (flag 2, label = (first_identity_record, end)): images are keys 1..label[0]-1. Files without
it (shuffled sets, DCFace releases) hold only images: every key is an image.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from facetrain.data.formats.image_codec import decode_bgr, encode_image
from facetrain.errors import DataError
from facetrain.io_utils import atomic_write_bytes, fresh_temporary, open_write, replace

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1
_SCAN_BYTES = 8 + _IR_HEADER.size + 4  # record head + IR header + first extra label


class IRHeader(NamedTuple):
    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def resolve_rec_paths(path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
    """A directory means `<dir>/train.rec`; the index defaults to the `.rec` with suffix `.idx`, if present."""
    rec = Path(path)
    if rec.is_dir():
        rec = rec / "train.rec"
    if not rec.is_file():
        raise DataError(f"{rec}: RecordIO file not found")
    idx = Path(idx_path) if idx_path is not None else rec.with_suffix(".idx")
    return rec, (idx if idx.is_file() else None)


def _malformed_line(idx: Path, text: str) -> DataError:
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields and (len(fields) != 2 or not all(f.isdigit() for f in fields)):
            return DataError(f"{idx}: line {number} is {line[:60]!r}, expected `key<TAB>offset` (two whole numbers)")
    return DataError(f"{idx}: malformed index (expected `key<TAB>offset` lines)")


def _parse_index(idx: Path, rec: Path, rec_size: int) -> tuple[np.ndarray, np.ndarray]:
    text = idx.read_bytes().decode("ascii", errors="replace")
    try:
        values = np.array(text.split(), dtype=np.int64) if text.strip() else np.zeros(0, np.int64)
    except (ValueError, OverflowError):
        raise _malformed_line(idx, text) from None
    if values.size % 2:
        raise _malformed_line(idx, text)
    keys, offsets = values[0::2], values[1::2]
    bad = np.flatnonzero((offsets < 0) | (offsets + 8 > rec_size))
    if bad.size:
        k = int(bad[0])
        raise DataError(f"{idx}: record {keys[k]} has offset {offsets[k]} past the end of {rec.name} ({rec_size} bytes)")
    sorted_keys = np.sort(keys)
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if dup.size:
        raise DataError(f"{idx}: key {sorted_keys[dup[0]]} is listed more than once")
    return keys, offsets


def _check_pair(rec: Path, idx: Path, data: np.ndarray, keys: np.ndarray, offsets: np.ndarray) -> None:
    """The index must describe this `.rec`: its last record ends exactly at the end of the file. A `.rec`
    and `.idx` of different writes (one file replaced, the other not) fail here, not at some later record."""
    if not len(offsets):
        if len(data):
            raise DataError(f"{idx}: empty index for {rec.name} of {len(data)} bytes: they do not belong together")
        return
    last = int(np.argmax(offsets))
    pos, size = int(offsets[last]), len(data)
    while True:
        magic, lrec = struct.unpack_from("<II", data, pos)
        if magic != MAGIC:
            raise DataError(f"{idx}: does not match {rec.name} (no record at byte {pos}); "
                            "the two files come from different writes: re-create them together")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        pos += 8 + length + (-length % 4)
        if cflag not in (1, 2) or pos + 8 > size:
            break
    if pos > size:
        raise DataError(f"{rec}: record {keys[last]} runs past the end of the file (truncated file?)")
    if pos != size:
        raise DataError(f"{idx}: does not match {rec.name}: its last record ends at byte {pos}, the file has "
                        f"{size} bytes; the two files come from different writes: re-create them together")


def _class_label(value: float, rec: Path, key: int) -> int:
    if not (np.isfinite(value) and value >= 0 and value == np.floor(value) and value < 2 ** 31):
        raise DataError(f"{rec}: record {key} has label {value}: a class label must be a whole number >= 0")
    return int(value)


def _scan_offsets(rec: Path, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """No `.idx`: walk the file; keys are the record numbers 0..n-1 in file order."""
    offsets, pos, size, number = [], 0, len(data), 0
    buf = data.data if size else b""
    while pos + 8 <= size:
        magic, lrec = struct.unpack_from("<II", buf, pos)
        if magic != MAGIC:
            raise DataError(f"{rec}: bad magic 0x{magic:08x} at byte {pos} (record {number})")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if pos + 8 + length > size:
            raise DataError(f"{rec}: record {number} runs past the end of the file")
        if cflag in (0, 1):  # start of a logical record (2/3 continue a split one)
            offsets.append(pos)
            number += 1
        pos += 8 + length + (-length % 4)
    if pos != size:
        raise DataError(f"{rec}: {size - pos} trailing bytes after record {number - 1} (truncated file?)")
    return np.arange(len(offsets), dtype=np.int64), np.asarray(offsets, dtype=np.int64)


class RecordReader:
    """Random access to a `.rec` (by `.idx`, or a sequential scan when the index is missing).

    Safe in DataLoader workers: the file descriptor is opened lazily per process (`os.pread`,
    no shared seek position), and the reader pickles without it.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path, self.idx_path = resolve_rec_paths(rec_path, idx_path)
        self.size = self.rec_path.stat().st_size
        data = self._data()
        if self.idx_path is not None:
            self.keys, self.offsets = _parse_index(self.idx_path, self.rec_path, self.size)
            _check_pair(self.rec_path, self.idx_path, data, self.keys, self.offsets)
        else:
            self.keys, self.offsets = _scan_offsets(self.rec_path, data)
        self._order = np.argsort(self.keys, kind="stable")
        self._sorted_keys = self.keys[self._order]
        self._fd, self._pid = None, None
        self._labels: np.ndarray | None = None
        self.header_record: IRHeader | None = None
        self.image_keys = self.keys
        if len(self.keys) and self._sorted_keys[0] == 0:
            head, payload = self.read_record(0)
            if head.flag > 0 and not payload:  # InsightFace header: no image, label=(first_identity_record, end)
                self.header_record = head
                first_identity, end = self._header_range(head)
                self.image_keys = self.keys[(self.keys >= 1) & (self.keys < first_identity)]

    def _header_range(self, head: IRHeader) -> tuple[int, int]:
        """(first identity record, end) of the header; the identity records it declares must be in the index."""
        values = np.atleast_1d(head.label)
        if len(values) < 2 or not np.isfinite(values[:2]).all() or (values[:2] != np.floor(values[:2])).any() \
                or not 1 <= values[0] <= values[1]:
            raise DataError(f"{self.rec_path}: header record 0 has labels {values.tolist()}, expected "
                            "(first identity record, end) with 1 <= first <= end")
        first, end = int(values[0]), int(values[1])
        listed = int(np.count_nonzero((self.keys >= first) & (self.keys < end)))
        if listed != end - first:
            raise DataError(f"{self.rec_path}: header record 0 declares {end - first} identities (records {first}.."
                            f"{end - 1}) but {listed} of those records exist: the class count does not match the data")
        return first, end

    def _data(self) -> np.ndarray:
        return np.memmap(self.rec_path, dtype=np.uint8, mode="r") if self.size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY), os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key in the index (DataError for a key that is not there)."""
        keys = np.asarray(keys, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted_keys, keys), max(len(self.keys) - 1, 0))
        missing = np.flatnonzero(self._sorted_keys[at] != keys) if len(self.keys) else np.arange(keys.size)
        if missing.size:
            raise DataError(f"{self.rec_path}: no record with key {keys.reshape(-1)[missing[0]]}")
        return self._order[at]

    def _read_part(self, pos: int, key: int) -> tuple[int, bytes, int]:
        head = os.pread(self._file(), 8, pos)
        if len(head) < 8:
            raise DataError(f"{self.rec_path}: record {key} at byte {pos} is cut off (file ends)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DataError(f"{self.rec_path}: bad magic 0x{magic:08x} in record {key} at byte {pos}")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if pos + 8 + length > self.size:
            raise DataError(f"{self.rec_path}: record {key} runs past the end of the file "
                            f"({length} bytes at byte {pos}, file has {self.size})")
        return cflag, os.pread(self._file(), length, pos + 8), pos + 8 + length + (-length % 4)

    def read_raw(self, key: int) -> bytes:
        """The record's payload; parts of a split record are joined with the magic they were split at."""
        cflag, data, nxt = self._read_part(int(self.offsets[self.positions(np.array([key]))[0]]), key)
        parts = [data]
        while cflag in (1, 2):
            cflag, data, nxt = self._read_part(nxt, key)
            parts += [_MAGIC_BYTES, data]
        return b"".join(parts)

    def read_record(self, key: int) -> tuple[IRHeader, bytes]:
        """(header, encoded image bytes) of one record."""
        raw = self.read_raw(key)
        if len(raw) < _IR_HEADER.size:
            raise DataError(f"{self.rec_path}: record {key} is too short for a header ({len(raw)} bytes)")
        flag, label, id1, id2 = _IR_HEADER.unpack_from(raw)
        start = _IR_HEADER.size
        if flag > 0:
            end = start + 4 * flag
            if end > len(raw):
                raise DataError(f"{self.rec_path}: record {key} declares {flag} labels but is only {len(raw)} bytes")
            label, start = np.frombuffer(raw, dtype="<f4", count=flag, offset=start).copy(), end
        return IRHeader(flag, label, id1, id2), raw[start:]

    def read_image(self, key: int) -> tuple[np.ndarray, int]:
        """(BGR uint8 112x112x3, class label) of one image record."""
        head, payload = self.read_record(key)
        label = _class_label(float(head.label[0] if head.flag > 0 else head.label), self.rec_path, key)
        return decode_bgr(payload, f"{self.rec_path} record {key}"), label

    def scan_labels(self, keys: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
        """Class label of each key from the 24-byte headers only (no decoding), vectorised; checks magic/length."""
        data = self._data()
        labels = np.empty(len(keys), dtype=np.int64)
        pos = self.positions(keys)
        span = np.arange(_SCAN_BYTES, dtype=np.int64)
        for s in range(0, len(keys), chunk):
            offs = self.offsets[pos[s:s + chunk]]
            heads = data[np.minimum(offs[:, None] + span, max(self.size - 1, 0))]
            words = np.ascontiguousarray(heads).view("<u4")  # (n, 9): magic, lrec, flag, label, id(2), id2(2), label0
            floats = words.view("<f4")
            short = offs + _SCAN_BYTES > self.size
            bad = np.flatnonzero(words[:, 0] != MAGIC)
            if bad.size:
                raise DataError(f"{self.rec_path}: bad magic in record {keys[s + bad[0]]} at byte {offs[bad[0]]}")
            lengths = (words[:, 1] & _LENGTH_MASK).astype(np.int64)
            flags = words[:, 2].astype(np.int64)
            need = np.where(flags > 0, _IR_HEADER.size + 4 * flags, _IR_HEADER.size)
            bad = np.flatnonzero((offs + 8 + lengths > self.size) | (lengths < need) | (short & (flags > 0)))
            if bad.size:
                raise DataError(f"{self.rec_path}: record {keys[s + bad[0]]} runs past the end of the file "
                                "or is too short for its header")
            values = np.where(flags > 0, floats[:, 8], floats[:, 3]).astype(np.float64)
            with np.errstate(invalid="ignore"):
                bad = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values != np.floor(values))
                                     | (values >= 2 ** 31))
            if bad.size:
                _class_label(float(values[bad[0]]), self.rec_path, int(keys[s + bad[0]]))
            labels[s:s + chunk] = values.astype(np.int64)
        return labels

    @property
    def labels(self) -> np.ndarray:
        """Labels of `image_keys`, computed once from the record headers."""
        if self._labels is None:
            self._labels = self.scan_labels(self.image_keys)
        return self._labels

    @property
    def num_classes(self) -> int:
        """max label + 1 (labels index the classifier directly); InsightFace's header count when larger."""
        n = int(self.labels.max()) + 1 if len(self.labels) else 0
        if self.header_record is not None:
            first, end = self._header_range(self.header_record)
            n = max(n, end - first)
        return n


class RecordWriter:
    """Write records and the `.idx`; both appear only when the writer closes cleanly.

    Commit order: the old `.idx` (and `companions`, e.g. `property`) are removed, the `.rec`
    is renamed into place, then the `.idx`, then the companions are written. A kill at any
    point leaves either a matching pair or a `.rec` alone, which readers scan: never a
    `.rec` beside an index of other data.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike,
                 companions: dict[Path, bytes] | None = None):
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        self.companions = dict(companions or {})
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec = fresh_temporary(self.rec_path)
        self._tmp_idx = fresh_temporary(self.idx_path)
        self._rec, self._idx = open_write(self._tmp_rec, "wb"), open_write(self._tmp_idx, "w")

    def write(self, key: int, label: float | Sequence[float], payload: bytes, id2: int = 0) -> None:
        labels = np.atleast_1d(np.asarray(label, dtype="<f4"))
        multi = np.ndim(label) > 0
        head = _IR_HEADER.pack(len(labels) if multi else 0, 0.0 if multi else float(labels[0]), int(key), id2)
        body = head + (labels.tobytes() if multi else b"") + payload
        if len(body) > _LENGTH_MASK:
            raise ValueError(f"record {key} is too large for RecordIO ({len(body)} bytes)")
        self._idx.write(f"{int(key)}\t{self._rec.tell()}\n")
        self._rec.write(struct.pack("<II", MAGIC, len(body)) + body + b"\0" * (-len(body) % 4))

    def close(self) -> None:
        for f in (self._rec, self._idx):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for path in (self.idx_path, *self.companions):
            path.unlink(missing_ok=True)
        replace(self._tmp_rec, self.rec_path)
        replace(self._tmp_idx, self.idx_path)
        for path, data in self.companions.items():
            atomic_write_bytes(path, data)

    def abort(self) -> None:
        for f, tmp in ((self._rec, self._tmp_rec), (self._idx, self._tmp_idx)):
            f.close()
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort() if exc_type else self.close()


def write_insightface_rec(prefix_or_dir: str | os.PathLike, images_or_encoded: Sequence, labels: Sequence[int],
                          header: bool = True, quality: int = 95) -> Path:
    """Write `<dir>/train.rec` + `train.idx` (or `X.rec` + `X.idx` when given a `.rec` path); returns the `.rec`.

    With `header` (InsightFace's layout) images are grouped by label as keys 1..N, record 0
    holds (N+1, N+1+C) and records N+1.. hold each identity's (first, end) image keys; a
    `property` file says "C,112,112". Without it, images are keys 0..N-1 in the given order.
    """
    target = Path(prefix_or_dir)
    rec = target if target.suffix == ".rec" else target / "train.rec"
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind="stable") if header else np.arange(len(labels))
    classes = np.unique(labels)

    def encoded(i: int) -> bytes:
        item = images_or_encoded[i]
        return bytes(item) if isinstance(item, (bytes, bytearray)) else encode_image(np.asarray(item), ".jpg", quality)

    companions = {rec.parent / "property": f"{len(classes)},112,112\n".encode()} if header else {}
    with RecordWriter(rec, rec.with_suffix(".idx"), companions) as w:
        first = 1 if header else 0
        if header:
            n = len(labels)
            w.write(0, [n + 1, n + 1 + len(classes)], b"")
        for k, i in enumerate(order):
            w.write(first + k, float(labels[i]), encoded(int(i)))
        if header:
            sorted_labels = labels[order]
            starts = np.searchsorted(sorted_labels, classes, side="left") + 1
            ends = np.searchsorted(sorted_labels, classes, side="right") + 1
            for c, (a, b) in enumerate(zip(starts, ends)):
                w.write(len(labels) + 1 + c, [float(a), float(b)], b"")
    return rec
