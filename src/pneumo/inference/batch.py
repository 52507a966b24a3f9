"""Predictions for archives too large to hold in memory: stream the files, write results as they come.

`predict_archive` walks a folder (or reads a CSV manifest) lazily, decodes the next batches on a
thread pool while the model runs the current one, and appends each batch's rows to the output
as soon as it is classified, so memory stays flat whatever the number of files and a killed run
loses at most the batch in flight: `resume=True` picks up where it stopped.

Example:
    >>> summary = predict_archive("scans/", out="results.csv")
    >>> summary.done, round(summary.images_per_second)
    (50000, 150)
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pneumo.data.pixels import ImageInfo
from pneumo.data.manifest import manifest_rows
from pneumo.data.preprocess import load_image_with_info
from pneumo.data.unreadable import STRICT_NOTE, read_each
from pneumo.errors import PneumoError, check_choice, check_flag, check_path, check_whole
from pneumo.inference.base import Model, Prediction
from pneumo.inference.classify import MAX_BATCH_SIZE, classify_images
from pneumo.inference.formats import FIRST_COLUMNS, TEXT_COLUMNS, prediction_rows
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.loading import BACKENDS, check_model, load_model
from pneumo.utils.csvfile import format_csv, format_record, open_for_append, read_csv, repair_csv, restore, text_positions
from pneumo.utils.atomic import WriteError, writing
from pneumo.utils.output_checks import output_file
from pneumo.utils.lock import OutputLock
from pneumo.utils.progress import make_progress
from pneumo.utils.walk import IMAGE_SUFFIXES, iter_image_files

__all__ = ["BatchSummary", "ResultWriter", "decode_files", "iter_source", "predict_archive", "skipped_path"]

Decoded = tuple[list[tuple[str, np.ndarray, ImageInfo]], list[tuple[str, str]]]  # (name, image, info)s, (name, error)s
SKIPPED_COLUMNS = ["path", "error"]  # the .skipped.csv sidecar
MAX_WORKERS = 1024  # decoding threads; more is a slip, each one a thread and two batches held ahead


@dataclass(frozen=True)
class BatchSummary:
    """What a run did: files classified, files skipped as unreadable, files found already in the
    output (resume), and the wall time of the run itself (model loading excluded)."""

    out: Path
    done: int
    skipped: int
    already_done: int
    seconds: float
    skipped_out: Path | None  # the sidecar listing the unreadable files; None when there were none

    @property
    def images_per_second(self) -> float:
        """Files handled (classified or skipped) per second."""
        return (self.done + self.skipped) / self.seconds if self.seconds > 0 else 0.0


def skipped_path(out: Path) -> Path:
    """Where the files that could not be read are listed: `results.csv` -> `results.skipped.csv`."""
    return out.with_suffix(".skipped.csv")


def _read_manifest(manifest: Path) -> Iterator[str]:
    """The `path` column of a CSV manifest, row by row; relative paths are taken from the manifest's folder.

    A results CSV or `.skipped.csv` list that pneumo wrote works as a manifest: its names are read
    back as they were before the spreadsheet-formula escape (`pneumo.utils.csvfile.restore`)."""
    ours: bool | None = None
    for _, row in manifest_rows(manifest, needs=("path",)):
        if ours is None:
            columns = list(row)
            ours = columns == SKIPPED_COLUMNS or tuple(columns[: len(FIRST_COLUMNS)]) == FIRST_COLUMNS
        if row["path"]:
            yield str(manifest.parent / (restore(row["path"]) if ours else row["path"]))


def iter_source(source: str | Path) -> Callable[[], Iterator[str]]:
    """A function that starts a fresh lazy pass over the image paths of a folder (recursively) or
    of a CSV manifest: called once to predict and once, in the background, to count for the ETA."""
    source = Path(source).expanduser()
    if source.is_dir():  # the walk `pneumo predict` makes of a folder: same files, same order
        return lambda: (str(path) for path in iter_image_files(source))
    if source.is_file() and source.suffix.lower() == ".csv":
        return lambda: _read_manifest(source)
    if not source.exists():
        raise PneumoError(f"{source} does not exist")
    raise PneumoError(
        f"{source} is neither a folder of images nor a CSV manifest (.csv with a path column); for single files use `pneumo predict`"
    )


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def decode_files(paths: list[str], size: int) -> Decoded:
    """Files decoded at the model's size with what each was, and those that could not be read with
    why: one bad file in an archive does not stop the batch."""
    skipped: list[tuple[str, str]] = []
    decoded = [(path, image, info) for path, (image, info) in read_each(paths, lambda path: load_image_with_info(path, size), skipped)]
    return decoded, skipped


def _decoded_batches(paths: Iterable[str], batch_size: int, image_size: int, workers: int) -> Iterator[Decoded]:
    """Batches decoded ahead on `workers` threads, in source order; at most 2 x workers batches
    wait decoded or in flight, which bounds memory however many files there are."""
    with ThreadPoolExecutor(workers, thread_name_prefix="pneumo-decode") as pool:
        pending: deque = deque()
        try:
            for chunk in _batches(paths, batch_size):
                pending.append(pool.submit(decode_files, chunk, image_size))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # stopped early (strict, an error, Ctrl-C): drop what has not started
            for future in pending:
                future.cancel()


def _repair_and_read(out: Path) -> tuple[set[str], list[str] | None]:
    """The paths already in a results CSV and its columns (None for an empty file). A run killed
    mid-write leaves a torn last record (no final newline, or cut inside a quoted name): it is
    cut off here, records not lines, so that file is predicted again and appended once."""
    repair_csv(out)
    columns, rows = read_csv(out, text_columns={"path"})
    if not columns:
        return set(), None
    if "path" not in columns:
        raise PneumoError(f"{out} is not a pneumo results CSV (it has no path column); choose another output file")
    return {row["path"] for row in rows}, columns


class ResultWriter:
    """Appends predictions to a CSV (or Parquet) file and unreadable files to the `.skipped.csv`
    sidecar, flushed batch by batch, so what is written survives a kill.

    The rows are `pneumo.inference.formats.format_predictions`'s CSV, the same as `pneumo predict --format csv`
    (written by `pneumo.utils.csvfile`: names with CR, LF, commas or quotes stay in their record,
    text cells are escaped against spreadsheet formulas and read back exactly on resume).
    Use `ResultWriter.open` to get one; it refuses to overwrite an existing output unless resuming.
    """

    def __init__(self, out: Path, done: set[str], header: list[str] | None, lock: OutputLock | None = None) -> None:
        self.out, self.done, self.skipped_out = out, done, skipped_path(out)
        self._lock = lock
        self.n_done = self.n_skipped = 0
        self._header = header
        self._as_parquet = out.suffix.lower() == ".parquet"
        self._file: Any = None
        self._skip_file: Any = None
        self._parquet: Any = None

    @classmethod
    def open(cls, out: str | Path, resume: bool = False) -> ResultWriter:
        """Check the output before any work: the format is known, and an existing file is only
        appended to when resuming (its rows are then skipped: `writer.done`)."""
        out = Path(out).expanduser()
        output_file(out, "the output")  # a folder, device or pipe, or a folder that cannot be written: refused before any work
        output_file(skipped_path(out), "the list of unreadable files")
        parquet = out.suffix.lower() == ".parquet"
        if parquet and importlib.util.find_spec("pyarrow") is None:
            raise PneumoError(f"writing {out.name} needs pyarrow: pip install pyarrow, or name the output .csv")
        if not parquet and out.suffix.lower() != ".csv":
            raise PneumoError(f"cannot tell the format of {out}: name it .csv or .parquet")
        done: set[str] = set()
        header: list[str] | None = None
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = OutputLock.acquire(out)  # before looking at it: a second run on the same output is refused, not interleaved
        try:
            if out.exists():
                if not resume:
                    raise PneumoError(
                        f"{out} already exists: pass --resume to skip the files it lists and append the rest, or choose another file"
                    )
                if parquet:
                    raise PneumoError(
                        f"--resume needs CSV output ({out} is Parquet, which a killed run leaves unreadable); write a .csv and convert it at the end"
                    )
                done, header = _repair_and_read(out)
            skipped_path(out).unlink(missing_ok=True)  # listed again below if still unreadable: nothing in it is in `out`
        except BaseException:
            lock.release()
            raise
        return cls(out, done, header, lock)

    def write(self, predictions: list[Prediction], skipped: list[tuple[str, str]]) -> None:
        """One batch: its predictions appended to the output, its unreadable files to the sidecar."""
        if predictions:
            columns, rows = prediction_rows(predictions)
            with writing(self.out, "the results"):  # a full disk names the file, and the rows so far stay readable
                if self._as_parquet:
                    self._write_parquet(format_csv(columns, rows))  # Parquet is no spreadsheet: the names as they are
                else:
                    self._write_csv(columns, rows)
            self.n_done += len(predictions)
        if skipped:
            with writing(self.skipped_out, "the list of skipped files"):
                if self._skip_file is None:
                    self._skip_file = open_for_append(self.skipped_out)
                    self._skip_file.write(format_record(SKIPPED_COLUMNS))
                text = text_positions(SKIPPED_COLUMNS, SKIPPED_COLUMNS)
                self._skip_file.write("".join(format_record(row, text) for row in skipped))
                self._skip_file.flush()
            self.n_skipped += len(skipped)

    def _write_csv(self, columns: list[str], rows: list[list[str]]) -> None:
        if self._file is None:
            if self._header is not None and columns != self._header:
                raise PneumoError(
                    f"{self.out} has other columns ({','.join(self._header)}) than this model writes ({','.join(columns)}): it comes"
                    " from another model; resume with the same model, or choose another output file"
                )
            self._file = open_for_append(self.out)
            if self._header is None:
                self._file.write(format_record(columns))
                self._header = columns
        text = text_positions(columns, TEXT_COLUMNS)
        self._file.write("".join(format_record(row, text) for row in rows))
        self._file.flush()

    def _write_parquet(self, text: str) -> None:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        # text columns are typed up front: a batch where every value is empty would otherwise be typed null
        text_columns = {name: pa.string() for name in ("path", "label", "warnings", "abstain_reason")}
        # Parquet strings are UTF-8: a file name that is not (its bytes kept as surrogates) is written with them escaped, caf\xe9.jpeg
        utf8 = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").encode("utf-8")
        table = pa_csv.read_csv(
            io.BytesIO(utf8),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types=text_columns),
        )
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.out, table.schema)
        self._parquet.write_table(table.cast(self._parquet.schema))  # one row group per batch

    def close(self) -> None:
        """Close every output, and give the lock back whatever closing them says (a full disk may fail a last flush)."""
        failed: WriteError | None = None
        try:
            for target, handle in ((self.out, self._file), (self.skipped_out, self._skip_file), (self.out, self._parquet)):
                try:
                    if handle is not None:
                        with writing(target):
                            handle.close()
                except WriteError as exc:
                    failed = failed or exc
        finally:
            if self._lock is not None:
                self._lock.release()
        if failed is not None:
            raise failed

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_classifier(model: str | Path | Model | None, backend: str) -> Model:
    """The model for a backend (`pneumo.inference.loading.load_model`'s rule); a model object is used as it is,
    unless it is of another backend than the one asked for."""
    if isinstance(model, Model) and backend != "auto" and (backend == "onnx") != isinstance(model, OnnxModel):
        raise PneumoError(f"backend {backend!r} does not run a {type(model).__name__}; pass backend='auto'")
    return load_model(model, backend=backend)


def _count_in_background(
    paths: Callable[[], Iterator[str]], done: set[str], progress: Any, task: Any, stop: threading.Event
) -> threading.Thread:
    """Count the files to do while the predictions start, then give the bar its total (and an ETA)."""

    def count() -> None:
        n = 0
        try:
            for path in paths():
                if stop.is_set():
                    return
                n += path not in done
        except (OSError, PneumoError):  # the prediction pass meets and reports the same problem
            return
        progress.update(task, total=n)

    thread = threading.Thread(target=count, name="pneumo-count", daemon=True)
    thread.start()
    return thread


def predict_archive(
    source: str | Path,
    *,
    out: str | Path,
    model: str | Path | Model | None = None,
    batch_size: int = 64,
    workers: int = 0,
    resume: bool = False,
    strict: bool = False,
    progress: bool = True,
    backend: str = "auto",
    abstain: bool = True,
) -> BatchSummary:
    """Classify every image under a folder (recursively) or listed in a CSV manifest (`path`
    column, relative to the manifest), appending rows to `out` (.csv, or .parquet with pyarrow).

    Args:
        model: a run folder, a checkpoint, an exported .onnx, or a loaded model; the bundled model when None.
        workers: decoding threads; 0 picks one per CPU, up to 4.
        resume: skip the files already in `out` and append the others (a kill leaves it ready for this).
        strict: stop at the first unreadable file instead of listing it in `<out stem>.skipped.csv`.
        progress: a progress bar on stderr (count, rate, and an ETA once a background count is in).
        backend: "onnx" (an export, or the bundled model's), "torch" (a checkpoint, with its
            feature-distance check), or "auto": onnx for the bundled model or an .onnx (about 1.5
            times faster on CPU), torch for a checkpoint.
        abstain: leave unlabelled (abstain) the files the input checks find outside what the model was trained on.

    Rows are in source order, with the paths as walked from `source`: resume with `source`
    spelled the same way, or every file is predicted again.
    """
    check_path("source", source, what="a folder of images or a CSV manifest (a path column)")
    check_path("out", out, what="the .csv or .parquet file to write")
    check_model("model", model)
    batch_size = check_whole("batch_size", batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
    workers = check_whole("workers", workers, minimum=0, maximum=MAX_WORKERS)
    resume, strict, progress = check_flag("resume", resume), check_flag("strict", strict), check_flag("progress", progress)
    check_choice("backend", backend, BACKENDS)
    abstain = check_flag("abstain", abstain)
    paths = iter_source(source)
    writer = ResultWriter.open(out, resume)
    try:
        classifier = _load_classifier(model, backend)
    except BaseException:
        writer.close()
        raise
    workers = workers or min(4, os.cpu_count() or 1)
    stop = threading.Event()
    start = time.perf_counter()
    bar = make_progress(progress, unit="images", stderr=True)
    todo = (p for p in paths() if p not in writer.done)
    with writer, bar, closing(_decoded_batches(todo, batch_size, classifier.image_size, workers)) as batches:
        task = bar.add_task("predicting", total=None, info="")
        if progress:
            _count_in_background(paths, writer.done, bar, task, stop)
        try:
            for decoded, skipped in batches:
                if skipped and strict:
                    raise PneumoError(
                        f"{skipped[0][1]} ({STRICT_NOTE}; the {writer.n_done} results so far"
                        f" are in {writer.out}: fix or remove the file and run again with --resume)"
                    )
                predictions = []
                if decoded:
                    names, images, infos = zip(*decoded)
                    predictions = classify_images(np.stack(images), infos, names, classifier, abstain)
                writer.write(predictions, skipped)
                bar.update(task, advance=len(decoded) + len(skipped), info=f"{writer.n_skipped} skipped" if writer.n_skipped else "")
        finally:
            stop.set()
    seconds = time.perf_counter() - start
    if not (writer.n_done or writer.n_skipped or writer.done):
        raise PneumoError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {source}")
    if writer.n_skipped and not (writer.n_done or writer.done):
        raise PneumoError(f"none of the {writer.n_skipped} files could be read; {writer.skipped_out} says why for each")
    return BatchSummary(
        writer.out, writer.n_done, writer.n_skipped, len(writer.done), seconds, writer.skipped_out if writer.n_skipped else None
    )
