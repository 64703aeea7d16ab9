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
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

PathLike = str | os.PathLike

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
    """(line number, line without its end) for each line; BOM and CRLF tolerated."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise FormatError(path, None, f"not valid UTF-8 ({err})") from None


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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
    return result


def _parse_int(path: PathLike, number: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FormatError(path, number, f"{what} {value!r} is not an integer") from None


def _format_score(score: float) -> str:
    return repr(float(score))


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
    """``{qid: {docid: score}}`` with numeric scores."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise FormatError(path, err.lineno, f"invalid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise FormatError(path, None, "expected a JSON object {qid: {docid: score}}")
    run: Run = {}
    for qid, docs in data.items():
        if not isinstance(docs, dict):
            raise FormatError(path, None, f"query {qid!r}: expected an object {{docid: score}}, found {type(docs).__name__}")
        scores = {}
        for docid, score in docs.items():
            if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
                raise FormatError(path, None, f"query {qid!r}, doc {docid!r}: score {score!r} is not a number")
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


def read_json(path: PathLike) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise FormatError(path, err.lineno, f"invalid JSON: {err.msg}") from None


def read_video2queries(path: PathLike) -> dict[str, list[str]]:
    """``{video_id: [qid, ...]}``; ids become strings; a repeated qid for a video is an error."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, None, "expected a JSON object {video_id: [qid, ...]}")
    result = {}
    for video, qids in data.items():
        if not isinstance(qids, list):
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
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise FormatError(path, number, f"invalid JSON: {err.msg} (column {err.colno})") from None
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

    On open, existing records are read (keyed by ``key``); a torn last line left by a killed
    writer is dropped and the file rewritten atomically; any other bad line is a FormatError.
    :meth:`append` writes, flushes and fsyncs one record and refuses a key already present.
    One writer per file.
    """

    def __init__(self, path: PathLike, key: str | Callable[[dict], str]):
        self.path = Path(path)
        self._key = key if callable(key) else (lambda record, name=key: str(record[name]))
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        text = self.path.read_bytes().decode("utf-8-sig", errors="strict")
        lines = text.split("\n")
        torn = lines[-1].strip() != ""
        kept = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = _parse_jsonl_line(self.path, number, line.rstrip("\r"), ())
                key = self._key(record)
            except (FormatError, KeyError) as error:
                if torn and number == len(lines):
                    continue  # an unfinished write of a killed job
                raise FormatError(self.path, number, f"bad record: {error}") from None
            if key in self.records:
                raise FormatError(self.path, number, f"key {key!r} appears twice")
            self.records[key] = record
            kept.append(record)
        if torn:
            write_jsonl(self.path, kept)

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
        with open(self.path, "a", encoding="utf-8", newline="\n") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[key] = dict(record)
        return True


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
                value = fields.get(field)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise FormatError(path, None, f"video {video!r}, query {qid!r}: {field} missing or not a number")
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
