"""Every file format the pipeline reads or writes, in one place.

Readers validate as they go and raise :class:`FormatError` naming the file, the line and what
is wrong. Ids are always strings. A UTF-8 byte-order mark and CRLF line ends are accepted.
Writers are atomic: they write a temporary file beside the target and rename it, so an
interrupted job never leaves a half-written file under the final name.

Formats (see REFERENCE.md, "Files"):

- queries TSV: ``query_id<TAB>query_text``
- qrels (TREC): ``qid 0 docid rel``; rel <= 0 is non-relevant
- first-stage JSON: ``{qid: {docid: score}}``
- TREC run: ``qid Q0 docid rank score tag``
- video2queries JSON: ``{video_id: [qid, ...]}``
- JSONL: one JSON object per line
- per-video rerank JSON: ``{video_id: {qid: {logprob_yes, logprob_no, logit_delta, p_yes}}}``
- video index TSV: ``video_id<TAB>path``
- stage-1 examples: this project's stage-1 JSONL or the reference's training JSONL
  (``evidence.caption``, one example per ``doc_id``), :func:`read_stage1_examples`
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

PathLike = str | os.PathLike

log = logging.getLogger(__name__)

#: fields of one scored (query, video) pair in the per-video rerank JSON
SCORE_FIELDS = ("logprob_yes", "logprob_no", "logit_delta", "p_yes")


class FormatError(ValueError):
    """A file does not follow its format. The message names file, line and problem."""

    def __init__(self, path: PathLike, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


# ----------------------------------------------------------------------------- low level


def _lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for each line; BOM and CRLF tolerated; bytes that are not
    UTF-8 are a FormatError naming file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, _decode(path, raw, number).rstrip("\r\n")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w"):
    """Open a temporary file beside ``path``; on success rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename is None and error.errno:  # a full disk: name the file
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike):
    """A fresh folder ``<path>.partial`` to write into; when the block ends without an error it
    replaces ``path``. A killed writer leaves only the ``.partial`` folder, cleared on the next try."""
    import shutil

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_dir(partial, path)


def replace_dir(source: PathLike, path: PathLike) -> None:
    """Move the whole folder ``source`` to ``path`` (same file system), replacing what was there."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    Path(source).rename(path)


def write_text(path: PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


#: longest id (UTF-8 bytes) that may become part of a file name: a file name has at most 255 bytes, and
#: ``{id}_reranking_{model}.json`` must fit with the model's name
MAX_ID_BYTES = 128


def id_problem(video_id: object) -> str | None:
    """Why ``video_id`` cannot be one file-name component inside a folder (``"unsafe id: ..."``), or
    None when it can. The one check of ids that become paths: every reader, layout and CLI uses it
    before a path is built from an id (an id is untrusted input)."""
    if not isinstance(video_id, str):
        return f"unsafe id: not a string ({type(video_id).__name__})"
    if not video_id or video_id != video_id.strip():
        return "unsafe id: empty or with leading/trailing whitespace"
    if video_id in (".", ".."):
        return f"unsafe id: {video_id!r} names a folder"
    for bad in ("/", "\\"):
        if bad in video_id:
            return f"unsafe id: contains {bad!r}"
    if any(ord(c) < 32 or ord(c) == 127 for c in video_id):
        return "unsafe id: contains a control character"
    try:
        size = len(video_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "unsafe id: not valid Unicode (lone surrogate)"
    if size > MAX_ID_BYTES:
        return f"unsafe id: {size} bytes long (at most {MAX_ID_BYTES})"
    return None


def _check_id(path: PathLike, number: int, value: str, what: str) -> str:
    if not value or value != value.strip() or any(c.isspace() for c in value):
        raise FormatError(path, number, f"{what} {value!r} is empty or contains whitespace")
    return value


def _parse_float(path: PathLike, number: int, value: str, what: str) -> float:
    try:
        result = float(value)
    except ValueError:
        raise FormatError(path, number, f"{what} {value!r} is not a number") from None
    if math.isnan(result):
        raise FormatError(path, number, f"{what} is NaN")
    if math.isinf(result):
        raise FormatError(path, number, f"{what} {value!r} is infinite")
    return result


def _parse_int(path: PathLike, number: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FormatError(path, number, f"{what} {value!r} is not an integer") from None


def _format_score(score: float) -> str:
    return repr(float(score))


def io_error_sentence(error: BaseException) -> str:
    """One sentence for an I/O error (read-only or full disk, missing file, lock held), naming the file."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


# ----------------------------------------------------------------------------- id lists


def read_id_list(path: PathLike) -> list[str]:
    """Ids, one per line (the first tab-separated field; blank lines skipped). Ids are not checked
    here: :func:`id_problem` makes an unsafe one a per-video failure where it is used."""
    return [ident for ident in (line.split("\t")[0].strip() for _, line in _lines(path)) if ident]


# ----------------------------------------------------------------------------- queries TSV


def read_queries(path: PathLike) -> dict[str, str]:
    """``query_id<TAB>query_text`` → {qid: text}. Duplicate ids and empty texts are errors."""
    queries: dict[str, str] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise FormatError(path, number, f"expected 2 tab-separated fields (query_id, query_text), found {len(parts)}")
        qid, text = _check_id(path, number, parts[0].strip(), "query id"), parts[1].strip()
        if not text:
            raise FormatError(path, number, f"query {qid!r} has an empty text")
        if qid in queries:
            raise FormatError(path, number, f"query id {qid!r} appears twice")
        queries[qid] = text
    return queries


def write_queries(path: PathLike, queries: Mapping[str, str]) -> None:
    with atomic_open(path) as handle:
        for qid, text in queries.items():
            if "\t" in text or "\n" in text:
                raise ValueError(f"query {qid!r}: text contains a tab or newline")
            handle.write(f"{qid}\t{text}\n")


# ----------------------------------------------------------------------------- qrels


def read_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid iter docid rel`` → {qid: {docid: rel}}. A repeated pair is an error."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:
            raise FormatError(path, number, f"expected 4 fields (qid 0 docid rel), found {len(parts)}")
        qid, _, docid, rel = parts
        rel_value = _parse_int(path, number, rel, "relevance")
        judged = qrels.setdefault(qid, {})
        if docid in judged:
            raise FormatError(path, number, f"pair ({qid}, {docid}) is judged twice")
        judged[docid] = rel_value
    return qrels


def write_qrels(path: PathLike, qrels: Mapping[str, Mapping[str, int]]) -> None:
    with atomic_open(path) as handle:
        for qid, judged in qrels.items():
            for docid, rel in judged.items():
                handle.write(f"{qid} 0 {docid} {int(rel)}\n")


# ----------------------------------------------------------------------------- runs


Run = dict[str, dict[str, float]]


def read_first_stage_json(path: PathLike) -> Run:
    """``{qid: {docid: score}}`` with finite numeric scores."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, None, "expected a JSON object {qid: {docid: score}}")
    run: Run = {}
    for qid, docs in data.items():
        if not isinstance(docs, dict):
            raise FormatError(path, None, f"query {qid!r}: expected an object {{docid: score}}, found {type(docs).__name__}")
        scores = {}
        for docid, score in docs.items():
            if not _is_finite_number(score):
                raise FormatError(path, None, f"query {qid!r}, doc {docid!r}: score {score!r} is not a number (or not finite)")
            scores[str(docid)] = float(score)
        run[str(qid)] = scores
    return run


def write_first_stage_json(path: PathLike, run: Mapping[str, Mapping[str, float]]) -> None:
    write_json(path, {qid: {doc: float(s) for doc, s in docs.items()} for qid, docs in run.items()})


def read_trec_run(path: PathLike) -> Run:
    """TREC run ``qid Q0 docid rank score tag`` → {qid: {docid: score}}."""
    run: Run = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise FormatError(path, number, f"expected 6 fields (qid Q0 docid rank score tag), found {len(parts)}")
        qid, _, docid, rank, score, _ = parts
        _parse_int(path, number, rank, "rank")
        score_value = _parse_float(path, number, score, "score")
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise FormatError(path, number, f"document {docid!r} appears twice for query {qid!r}")
        docs[docid] = score_value
    return run


def read_run(path: PathLike) -> Run:
    """A first-stage run as JSON (``.json``) or TREC run file (anything else)."""
    return read_first_stage_json(path) if str(path).endswith(".json") else read_trec_run(path)


def ranked(docs: Mapping[str, float]) -> list[str]:
    """Documents in trec_eval's order: score descending, then document id descending."""
    return [doc for doc, _ in sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def write_trec_run(path: PathLike, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """Write a TREC run; documents of each query in :func:`ranked` order, rank from 1."""
    _check_id(path, 0, tag, "run tag")
    with atomic_open(path) as handle:
        for qid, docs in run.items():
            for rank, doc in enumerate(ranked(docs), start=1):
                handle.write(f"{qid} Q0 {doc} {rank} {_format_score(docs[doc])} {tag}\n")


# ----------------------------------------------------------------------------- JSON and JSONL


def write_json(path: PathLike, data: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=1, ensure_ascii=False, sort_keys=False)
        handle.write("\n")


class _DuplicateKey(ValueError):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict:
    """object_pairs_hook: a key twice in one object is an error (json keeps the last one silently)."""
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _is_finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _decode(path: PathLike, data: bytes, line: int | None = None) -> str:
    """UTF-8 text of ``data`` (a BOM dropped); a FormatError naming the file (and line) otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FormatError(path, line, f"not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})") from None


def _loads(path: PathLike, text: str, line: int | None = None) -> Any:
    """JSON text → value; invalid JSON and repeated keys are FormatErrors naming file and line.
    NaN and Infinity (which json accepts) are kept out of scores by the score readers."""
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except _DuplicateKey as dup:
        raise FormatError(path, line, f"key {dup.args[0]!r} appears twice in one object") from None
    except json.JSONDecodeError as err:
        where = f" (column {err.colno})" if line is not None else ""
        raise FormatError(path, line if line is not None else err.lineno, f"invalid JSON: {err.msg}{where}") from None


def read_json(path: PathLike) -> Any:
    """A JSON file: valid UTF-8, no key twice in one object; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    return _loads(path, _decode(path, data))


def read_video2queries(path: PathLike) -> dict[str, list[str]]:
    """``{video_id: [qid, ...]}``; ids become strings; a repeated qid for a video is an error."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, None, "expected a JSON object {video_id: [qid, ...]}")
    result = {}
    for video, qids in data.items():
        if not isinstance(qids, list) or not all(isinstance(q, (str, int)) and not isinstance(q, bool) for q in qids):
            raise FormatError(path, None, f"video {video!r}: expected a list of query ids")
        qids = [str(q) for q in qids]
        if len(set(qids)) != len(qids):
            raise FormatError(path, None, f"video {video!r}: a query id is listed twice")
        result[str(video)] = qids
    return result


def video2queries_from_run(run: Mapping[str, Mapping[str, float]], depth: int | None = None) -> dict[str, list[str]]:
    """Every query each video is a candidate for (within ``depth`` of the ranking), sorted ids."""
    mapping: dict[str, list[str]] = {}
    for qid in sorted(run):
        for doc in ranked(run[qid])[:depth]:
            mapping.setdefault(doc, []).append(qid)
    return dict(sorted(mapping.items()))


def read_jsonl(path: PathLike, required: Iterable[str] = ()) -> list[dict]:
    """One JSON object per line; blank lines skipped; ``required`` keys checked per line."""
    return list(iter_jsonl(path, required))


def iter_jsonl(path: PathLike, required: Iterable[str] = ()) -> Iterator[dict]:
    required = tuple(required)
    for number, line in _lines(path):
        if line.strip():
            yield _parse_jsonl_line(path, number, line, required)


def _parse_jsonl_line(path: PathLike, number: int, line: str, required: tuple[str, ...]) -> dict:
    record = _loads(path, line, number)
    if not isinstance(record, dict):
        raise FormatError(path, number, "expected a JSON object")
    missing = [key for key in required if key not in record]
    if missing:
        raise FormatError(path, number, f"missing field(s) {', '.join(missing)}")
    return record


def write_jsonl(path: PathLike, records: Iterable[Mapping]) -> None:
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_id_text_jsonl(path: PathLike, id_field: str = "doc_id", text_field: str = "text") -> dict[str, str]:
    """{id: text} from JSONL records such as captions or transcripts; a repeated id is an error."""
    result: dict[str, str] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        record = _parse_jsonl_line(path, number, line, (id_field, text_field))
        key = str(record[id_field])
        if key in result:
            raise FormatError(path, number, f"{id_field} {key!r} appears twice")
        if not isinstance(record[text_field], str):
            raise FormatError(path, number, f"{text_field} is not a string")
        result[key] = record[text_field]
    return result


def _stage1_caption(path: PathLike, number: int, record: dict) -> str:
    """The caption of a stage-1 record: ``caption`` (this project's stage-1 JSONL) or
    ``evidence.caption`` (the reference's stage-2 JSONL, which its stage 1 reads)."""
    caption = record.get("caption")
    if caption is None:
        evidence = record.get("evidence")
        if evidence is not None and not isinstance(evidence, dict):
            raise FormatError(path, number, "evidence is not an object {caption, asr}")
        caption = (evidence or {}).get("caption")
    if caption is None:
        raise FormatError(path, number, "no caption: expected a field caption (stage-1 JSONL) or "
                                        "evidence.caption (the reference's training JSONL)")
    if not isinstance(caption, str):
        raise FormatError(path, number, "caption is not a string")
    return caption.strip()


def read_stage1_examples(path: PathLike) -> list[dict]:
    """Stage-1 examples ``{"doc_id", "videos", "caption"}``, one per video, from either

    - this project's stage-1 JSONL (``{"doc_id", "videos", "caption", ...}``, one record per video), or
    - the reference's training JSONL (``{"query_id", "doc_id", "videos", "evidence": {"caption"}, ...}``,
      one record per (query, video) pair): the first record of each ``doc_id`` with a non-empty caption
      is kept, as the reference de-duplicates by ``doc_id``.

    Other fields of the kept record stay. Each record needs ``doc_id`` and a non-empty list ``videos``;
    a record whose caption is empty is left out (a video whose every record has an empty caption
    is logged with its line, and no example at all is an error).
    """
    import logging

    examples: dict[str, dict] = {}
    empty: dict[str, int] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        record = _parse_jsonl_line(path, number, line, ("doc_id", "videos"))
        doc = str(record["doc_id"])
        videos = record["videos"]
        if not isinstance(videos, list) or not videos or not all(isinstance(v, str) and v for v in videos):
            raise FormatError(path, number, f"doc {doc!r}: videos must be a non-empty list of paths")
        if doc in examples:
            continue
        caption = _stage1_caption(path, number, record)
        if not caption:
            empty.setdefault(doc, number)
            continue
        examples[doc] = {**record, "doc_id": doc, "caption": caption}
    left_out = {doc: number for doc, number in empty.items() if doc not in examples}
    if left_out:
        shown = ", ".join(f"{doc!r} (line {number})" for doc, number in list(left_out.items())[:5])
        logging.getLogger(__name__).warning("%s: %d video(s) have only empty captions and are left out: %s%s", path,
                                            len(left_out), shown, " ..." if len(left_out) > 5 else "")
    return list(examples.values())


class JsonlAppender:
    """A JSONL file that grows one record at a time and resumes without duplicates.

    On open, existing records are read (keyed by ``key``); a last line without its newline, left
    by a killed writer however it was torn (inside a multi-byte character too), is dropped unless
    it holds a whole record, and the file rewritten atomically; any other bad line is a FormatError.
    :meth:`append` writes, flushes and fsyncs one record and refuses a key already present;
    :meth:`put` and :meth:`discard` replace or drop a record (the file is rewritten atomically).
    A symbolic link is refused (records never go through it to another file). One writer per file:
    the callers hold :class:`DirLock` on the folder.
    """

    def __init__(self, path: PathLike, key: str | Callable[[dict], str]):
        self.path = Path(path)
        self._key = key if callable(key) else (lambda record, name=key: str(record[name]))
        self.records: dict[str, dict] = {}
        if self.path.is_symlink():
            raise FormatError(self.path, None, "is a symbolic link; refusing to write through it (replace it with "
                                               "a regular file)")
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        torn = lines[-1].strip() != b""
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = _parse_jsonl_line(self.path, number, _decode(self.path, raw, number).rstrip("\r"), ())
                key = self._key(record)
            except (FormatError, KeyError) as error:
                if torn and number == len(lines):
                    log.warning("%s:%d: dropped an unfinished last line (a killed writer's)", self.path, number)
                    continue
                raise FormatError(self.path, number, f"bad record: {error}") from None
            if key in self.records:
                raise FormatError(self.path, number, f"key {key!r} appears twice (two writers at once?)")
            self.records[key] = record
        if torn:
            self._rewrite()

    def _rewrite(self) -> None:
        write_jsonl(self.path, self.records.values())

    def __contains__(self, key: object) -> bool:
        return str(key) in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: Mapping) -> bool:
        """Append ``record``; False (nothing written) when its key is already there."""
        key = self._key(dict(record))
        if key in self.records:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            with open(fd, "a", encoding="utf-8", newline="\n") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:  # a full disk: name the file
            raise OSError(error.errno, error.strerror, str(self.path)) from None
        self.records[key] = dict(record)
        return True

    def put(self, record: Mapping) -> bool:
        """Add ``record``, replacing the one of the same key; False when that one was equal."""
        record = dict(record)
        key = self._key(record)
        if key not in self.records:
            return self.append(record)
        if self.records[key] == record:
            return False
        self.records[key] = record
        self._rewrite()
        return True

    def discard(self, key: object) -> bool:
        """Drop the record of ``key``; False when there was none."""
        if self.records.pop(str(key), None) is None:
            return False
        self._rewrite()
        return True


class LockedError(OSError):
    """Another process writes into the same output folder."""


class DirLock:
    """One writer per output folder: an exclusive ``flock`` on ``<folder>/.rankvideo.lock`` (or on
    ``lock_file``), which holds the holder's pid and host while held (emptied on release). The kernel
    releases it when the holder exits, killed too, so a stale lock file never blocks. A second writer gets :class:`LockedError`
    naming the holder. Use as a context manager."""

    NAME = ".rankvideo.lock"

    def __init__(self, folder: PathLike, lock_file: PathLike | None = None):
        self.path = Path(lock_file) if lock_file is not None else Path(folder) / self.NAME
        self._fd: int | None = None

    def __enter__(self) -> "DirLock":
        import fcntl
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"{self.path.parent} is in use by {holder} (lock {self.path}); wait for it to finish "
                              "or use another output folder") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no stale holder in it; the same (empty) file after every run
            os.close(self._fd)  # closing releases the lock; the file stays (removing it would race)
            self._fd = None


# ----------------------------------------------------------------------------- rerank output


def rerank_filename(video_id: str, model_name: str) -> str:
    """The seed's per-video output name: ``{video_id}_reranking_{model_name}.json``."""
    return f"{video_id}_reranking_{model_name}.json"


def write_video_scores(path: PathLike, video_id: str, scores: Mapping[str, Mapping[str, float]]) -> None:
    """Per-video rerank JSON ``{video_id: {qid: {logprob_yes, logprob_no, logit_delta, p_yes}}}``."""
    write_json(path, {video_id: {qid: {f: float(s[f]) for f in SCORE_FIELDS} for qid, s in scores.items()}})


def read_video_scores(path: PathLike) -> dict[str, dict[str, dict[str, float]]]:
    """Read one per-video rerank JSON, checking every pair has the four score fields."""
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise FormatError(path, None, "expected {video_id: {qid: {logprob_yes, logprob_no, logit_delta, p_yes}}}")
    for video, per_query in data.items():
        if not isinstance(per_query, dict):
            raise FormatError(path, None, f"video {video!r}: expected an object {{qid: scores}}")
        for qid, fields in per_query.items():
            if not isinstance(fields, dict):
                raise FormatError(path, None, f"video {video!r}, query {qid!r}: expected an object of scores")
            for field in ("logit_delta", "p_yes"):
                if not _is_finite_number(fields.get(field)):
                    raise FormatError(path, None, f"video {video!r}, query {qid!r}: {field} missing, not a number or not "
                                                  f"finite ({fields.get(field)!r})")
    return data


#: files ``python -m rankvideo.rerank`` writes beside the per-video scores of its output folder
RERANK_RUN_INFO = "run_info.json"
RERANK_SUMMARY = "summary.json"


def read_prediction_dir(pred_dir: PathLike, score_field: str = "logit_delta") -> dict[str, dict[str, float]]:
    """All per-video JSON files of a folder → {qid: {video_id: score}}.

    The rerank command's own ``run_info.json`` and ``summary.json`` are not score files and are
    skipped, so its output folder evaluates as it is; any other ``*.json`` must be a per-video score
    file. A pair that appears in two files is an error (it would make the result depend on file order).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction folder not found")
    scores: dict[str, dict[str, float]] = {}
    for path in sorted(pred_dir.glob("*.json")):
        if path.name in (RERANK_RUN_INFO, RERANK_SUMMARY):
            continue
        for video, per_query in read_video_scores(path).items():
            for qid, fields in per_query.items():
                docs = scores.setdefault(str(qid), {})
                if str(video) in docs:
                    raise FormatError(path, None, f"pair (query {qid!r}, video {video!r}) is scored in another file too")
                docs[str(video)] = float(fields[score_field])
    return scores


# ----------------------------------------------------------------------------- video index


def read_video_index(path: PathLike) -> dict[str, str]:
    """``video_id<TAB>path`` → {video_id: path}; relative paths stay relative to the caller."""
    index: dict[str, str] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip():
            raise FormatError(path, number, "expected 2 tab-separated fields (video_id, path)")
        video = _check_id(path, number, parts[0].strip(), "video id")
        if video in index:
            raise FormatError(path, number, f"video id {video!r} appears twice")
        index[video] = parts[1].strip()
    return index
