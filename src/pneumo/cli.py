"""The `pneumo` command: argument parsing and printing only; the work is in the library."""

from __future__ import annotations

import errno
import gc
import importlib.util
import json
import logging
import os
import signal
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pneumo.errors import PneumoError
from pneumo.utils.atomic import atomic_write
from pneumo.utils.logs import LOGGER
from pneumo.utils.output_checks import output_file, output_folder


class _Command(typer.core.TyperCommand):
    """A command whose help shows an argument by its name alone (Typer adds its Python type,
    `<list[Path]>`); set on this command's own parameters, nothing global."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type = param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Pneumonia detection on pediatric chest X-rays.")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Look at a dataset before training on it.")
app.add_typer(data_app, name="data")
models_app = typer.Typer(rich_markup_mode=None)
app.add_typer(models_app, name="models")


def _width() -> int | None:
    """The width Rich takes from COLUMNS, unless COLUMNS is too small to print in (COLUMNS=0 printed
    nothing at all): then a plain 80."""
    columns = os.environ.get("COLUMNS", "")
    return 80 if columns.isdigit() and int(columns) < 20 else None


console = Console(width=_width())
err_console = Console(stderr=True, width=_width(), soft_wrap=True)  # messages and logs: one line each, never wrapped


class _LogLines(logging.Handler):
    """The library's log (the `pneumo` logger) as plain lines on stderr through Rich, one each, never wrapped:
    no time or level, a warning marked as the CLI marks every warning."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = escape(self.format(record))
            err_console.print(f"[yellow]warning:[/] {line}" if record.levelno >= logging.WARNING else line, highlight=False)
        except Exception:
            self.handleError(record)


_log_lines = _LogLines(logging.INFO)


def _show_log() -> None:
    """Once, as the command starts: the library's progress lines (INFO and above) on stderr, and only there."""
    parent = logging.getLogger(LOGGER)
    if _log_lines not in parent.handlers:
        parent.addHandler(_log_lines)
    parent.setLevel(logging.INFO)
    parent.propagate = False


def _quiet_log(quiet: bool) -> None:
    """--quiet: warnings and errors only, no progress lines."""
    _log_lines.setLevel(logging.WARNING if quiet else logging.INFO)


def _version(show: bool) -> None:
    if show:
        from pneumo.version import __version__

        console.print(f"pneumo {__version__}")
        raise typer.Exit()


@app.callback()
def _app(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Pneumonia detection on pediatric chest X-rays."""


def _fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return str(value)


def _count(n: int, noun: str) -> str:
    """ "1 heatmap", "3 heatmaps"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _report_skipped(skipped: list[tuple[str, str]], total: int) -> None:
    """The files a batch skipped, on stderr, so they are seen but do not spoil JSON or CSV output."""
    if not skipped:
        return
    err_console.print(
        f"[yellow]skipped {len(skipped)} of {total} files that cannot be read (--strict makes this an error):[/]", highlight=False
    )
    for path, message in skipped[:20]:
        err_console.print(escape(f"  {message}" if path in message else f"  {path}: {message}"), highlight=False)
    if len(skipped) > 20:
        err_console.print(f"  ... and {len(skipped) - 20} more", highlight=False)


@data_app.command("summary", cls=_Command)
def data_summary(
    data: Path = typer.Argument(..., metavar="DATA", help="Kaggle-style root, class-folder directory or CSV manifest."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip decoding every image."),
) -> None:
    """Counts per split, class and pathogen; patients; class weights; warnings."""
    from pneumo.data.summary import summarize

    summary = summarize(data, check_images=not no_check, progress=not as_json and sys.stderr.isatty())
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    splits = summary["splits"]
    table = Table(title=f"{summary['root']} ({summary['layout']} layout)")
    table.add_column("")
    for name in splits:
        table.add_column(name, justify="right")
    rows = {
        "images": lambda s: str(s["images"]),
        "NORMAL": lambda s: str(s["classes"]["NORMAL"]),
        "PNEUMONIA": lambda s: str(s["classes"]["PNEUMONIA"]),
        "  bacteria": lambda s: str(s["pathogens"].get("bacteria", 0)),
        "  virus": lambda s: str(s["pathogens"].get("virus", 0)),
        "patients (NORMAL / PNEUMONIA)": lambda s: (
            f"{s['patients']} ({s['patients_by_class']['NORMAL']} / {s['patients_by_class']['PNEUMONIA']})"
        ),
        "images per patient (mean, max)": lambda s: f"{s['images_per_patient']['mean']:.2f}, {s['images_per_patient']['max']}",
        "PNEUMONIA : NORMAL": lambda s: f"{s['pneumonia_to_normal']:.2f} : 1",
        "class weight NORMAL": lambda s: _fmt(s["class_weights"]["NORMAL"]),
        "class weight PNEUMONIA": lambda s: _fmt(s["class_weights"]["PNEUMONIA"]),
    }
    for label, cell in rows.items():
        table.add_row(label, *(cell(s) for s in splits.values()))
    console.print(table)
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    if not summary["warnings"]:
        console.print("[green]no problems found[/]")


@data_app.command("download", cls=_Command)
def data_download(
    source: str = typer.Option(
        "mendeley",
        "--source",
        metavar="TEXT",
        help="mendeley (the original release, CC BY 4.0) or kaggle (needs kagglehub and an API token).",
    ),
    to: Path = typer.Option(Path("data"), "--to", metavar="PATH", help="Folder to download and unpack into."),
    url: Optional[str] = typer.Option(
        None, "--url", metavar="TEXT", help="A copy of ChestXRay2017.zip (http(s):// or file://); default $PNEUMO_DATA_URL, else Mendeley."
    ),
    sha256: Optional[str] = typer.Option(
        None, "--sha256", metavar="TEXT", help="Expected SHA-256 of the archive (default: the one recorded at the first download)."
    ),
    no_check: bool = typer.Option(False, "--no-check", help="Skip decoding every image after unpacking."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar and no progress lines; warnings still show."),
    max_download_gb: float = typer.Option(
        3.0, "--max-download-gb", metavar="NUMBER", help="Stop a download that grows past this many GB (the archive is about 1.2 GB)."
    ),
) -> None:
    """Fetch the dataset, resuming a partial download, verify it, unpack it safely and check it."""
    if not 0 < max_download_gb < 1e6:  # NaN fails too
        raise PneumoError(f"--max-download-gb must be a positive number of GB; got {max_download_gb}")
    output_folder(to, "--to")
    _quiet_log(quiet)
    from pneumo.data.download import download

    result = download(
        source,
        to,
        url=url,
        sha256=sha256,
        progress=not quiet,
        check_images=not no_check,
        max_download=int(max_download_gb * 1e9),
    )
    console.print(f"[bold]data:[/] {escape(str(result.path))}" + (" (already in place)" if result.reused else ""))
    if result.archive is not None:
        console.print(f"archive: {escape(str(result.archive))}  {result.bytes} bytes  sha256 {result.sha256}")
    splits = result.summary["splits"]
    console.print(
        "; ".join(
            f"{name}: {s['images']} images ({s['classes']['NORMAL']} NORMAL, {s['classes']['PNEUMONIA']} PNEUMONIA)"
            for name, s in splits.items()
        )
    )
    for warning in result.summary["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(f"next: {escape(result.next_command)}")


@data_app.command("preview", cls=_Command)
def data_preview(
    data: Path = typer.Argument(..., metavar="DATA", help="Dataset to draw from."),
    out: Path = typer.Option(..., "--out", metavar="PATH", help="PNG file to write."),
    split: Optional[str] = typer.Option(None, metavar="TEXT", help="Split to draw from (default: train, or the only one)."),
    n: int = typer.Option(16, metavar="N", help="Number of images."),
    size: int = typer.Option(180, metavar="N", help="Side in pixels each image is resized to."),
    seed: int = typer.Option(0, metavar="N", help="Which random batch."),
) -> None:
    """The notebook's grid of a batch with NORMAL/PNEUMONIA titles, as PNG."""
    output_file(out, "--out")
    from pneumo.viz.preview import preview

    console.print(f"wrote {preview(data, out, split=split, n=n, size=size, seed=seed)}")


@app.command(cls=_Command)
def train(
    config: Optional[str] = typer.Option(
        None, "--config", metavar="TEXT", help="Recipe: a YAML file or a shipped name (seed, default, cpu); default: default."
    ),
    out: Optional[Path] = typer.Option(None, "--out", metavar="PATH", help="Run folder to create."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", metavar="TEXT", help="Override a config key, e.g. --set epochs=5 (repeatable)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    resume: Optional[Path] = typer.Option(
        None, "--resume", metavar="PATH", help="Continue a stopped run in this folder, with the config saved there."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be read instead of skipping it."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar and no progress lines; warnings still show."),
    mlflow: Optional[str] = typer.Option(
        None,
        "--mlflow",
        metavar="[URI]",
        help="Also log params, metrics per epoch, pictures and the model to MLflow (default store: sqlite:///mlflow.db here; pip install 'pneumo[track]'). TensorBoard events go to RUN/tensorboard/ whenever tensorboard is installed.",
    ),
) -> None:
    """Train a model; writes config, split, history, plots, checkpoints and a validation report."""
    if mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise PneumoError("--mlflow needs MLflow: pip install 'pneumo[track]' (or mlflow)")
    if out is not None and resume is None:
        output_folder(out, "--out")  # before the imports and the data: a file, a device or a read-only folder
    _quiet_log(quiet)
    from pneumo.config import load_config
    from pneumo.training import train as run_training

    if resume is not None:
        if config is not None or set_ or out is not None or overwrite or strict:
            raise PneumoError(
                "--resume continues a run with the config saved in its folder; leave out --config, --set, --strict, --out and --overwrite"
            )
        result = run_training(None, out=resume, progress=not quiet, resume=True, mlflow=mlflow)
    else:
        if out is None:
            raise PneumoError("give --out RUN_DIR for a new run, or --resume RUN_DIR to continue a stopped one")
        result = run_training(
            load_config(config or "default", [*(set_ or []), *(["strict=true"] if strict else [])]),
            out=out,
            overwrite=overwrite,
            progress=not quiet,
            mlflow=mlflow,
        )
    from pneumo.training.distributed import is_main

    if not is_main():  # under torchrun every process returns the same result; one prints it
        return
    cfg = result.config
    r = result.report
    console.print(
        f"[bold]validation[/] ({cfg.split} split, epoch {r['epoch']}, threshold {r['threshold']:.3g}): "
        f"accuracy {_fmt(r['accuracy'])} [{_fmt(r['ci95']['accuracy'][0])}, {_fmt(r['ci95']['accuracy'][1])}]  "
        f"ROC AUC {_fmt(r['roc_auc'])}  recall {_fmt(r['recall'])}  specificity {_fmt(r['specificity'])}"
    )
    if r["leak"]["patients_in_both"]:
        seen, unseen = r["leak"]["seen"], r["leak"]["unseen"]
        console.print(
            f"[yellow]leak:[/] {r['leak']['patients_in_both']} patients in both train and val; val accuracy on "
            f"their images {_fmt(seen['accuracy'] if seen else float('nan'))} vs "
            f"{_fmt(unseen['accuracy'] if unseen else float('nan'))} on unseen patients"
        )
    console.print(f"{r['seconds_per_epoch']:.1f} s/epoch; run folder: {result.run_dir}")


@app.command(cls=_Command)
def evaluate(
    data: Path = typer.Argument(
        ..., metavar="DATA", help="Class-folder directory (e.g. an official test/), Kaggle root with --split, or manifest."
    ),
    model: Optional[Path] = typer.Option(None, "--model", metavar="PATH", help="Run folder or checkpoint (default: the bundled model)."),
    split: Optional[str] = typer.Option(None, "--split", metavar="TEXT", help="Split of a Kaggle-style root, e.g. test."),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help="Write the full report (with every prediction) here."),
    plots: Optional[Path] = typer.Option(None, "--plots", metavar="PATH", help="Folder for roc.png, confusion.png and reliability.png."),
    bootstrap: int = typer.Option(1000, metavar="N", help="Bootstrap resamples for the 95% intervals."),
    shifts: bool = typer.Option(False, "--shifts", help="Also report metrics under simulated acquisition shifts."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be read instead of skipping it."),
) -> None:
    """Metrics at the model's stored threshold (and at 0.5) with 95% bootstrap intervals."""
    if json_out is not None:  # checked before the work (and the imports), not after it
        output_file(json_out, "--json")
    if plots is not None:
        output_folder(plots, "--plots")
    from pneumo.evaluation.evaluate import evaluate as run_evaluation
    from pneumo.evaluation.report import write_report

    report = run_evaluation(
        data, model=model, split=split, n_boot=bootstrap, plots_dir=plots, progress=sys.stderr.isatty(), shifts=shifts, strict=strict
    )
    _report_skipped(report.skipped, report.n + len(report.skipped))
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    table = Table(title=f"{report.n} images, threshold {report.threshold:.3g}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("at 0.5", justify="right")
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "loss"):
        ci = report.ci95.get(key)
        table.add_row(key, _fmt(getattr(report, key)), f"{_fmt(ci[0])} - {_fmt(ci[1])}" if ci else "", _fmt(report.at_half[key]))
    console.print(table)
    (tn, fp), (fn, tp) = report.confusion_matrix
    console.print(f"confusion: TN {tn}  FP {fp}  FN {fn}  TP {tp}")
    console.print(
        f"calibration: ECE {_fmt(report.ece)} (10 bins; 0 is perfect)"
        + (f"; reliability diagram in {escape(str(plots / 'reliability.png'))}" if plots else "")
    )
    held = report.abstention
    if held.n:
        judged = held.judged
        why = ", ".join(f"{n} {escape(reason)}" for reason, n in held.reasons.items())
        console.print(f"[yellow]no verdict[/] for {held.n} of {report.n} films ({why}); the table above counts every film")
        if judged:
            console.print(
                f"on the {judged['n']} judged films: accuracy {_fmt(judged['accuracy'])}  sensitivity {_fmt(judged['recall'])}  "
                f"specificity {_fmt(judged['specificity'])}  ROC AUC {_fmt(judged['roc_auc'])}"
            )
    if report.shifted is not None:
        shifted = Table(title="under simulated acquisition shifts (same threshold)")
        for col in ("shift", "ROC AUC", "recall", "specificity", "accuracy at 62.5% sick"):
            shifted.add_column(col, justify="left" if col == "shift" else "right")
        for name, m in report.shifted.items():
            shifted.add_row(name, _fmt(m["roc_auc"]), _fmt(m["recall"]), _fmt(m["specificity"]), _fmt(m["accuracy_at_prevalence"]))
        console.print(shifted)
    if plots:
        console.print(f"wrote roc.png, confusion.png and reliability.png to {escape(str(plots))}", highlight=False)
    if json_out:
        console.print(f"wrote {escape(str(write_report(report.to_dict(), json_out)))}", highlight=False)


@app.command(cls=_Command)
def ensemble(
    members: List[Path] = typer.Argument(
        ...,
        metavar="MODEL",
        help="Run or checkpoint folders of models of one task and input size (train them with one --set split_seed=...).",
    ),
    out: Path = typer.Option(
        ..., "--out", metavar="PATH", help="Model folder to write; then --model DIR in predict, evaluate, serve, export and calibrate."
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", metavar="PATH", help="Where the members' training data is now, if not where their configs say."
    ),
    outliers: Optional[str] = typer.Option(
        None,
        "--outliers",
        metavar="TEXT",
        help="Films the ensemble must not judge, for its input check: a folder, auto or none (default: the members' config).",
    ),
    calibration: str = typer.Option(
        "shift", "--calibration", metavar="TEXT", help="none, val or shift: how the ensemble's temperature is fitted."
    ),
    threshold: str = typer.Option("shift", "--threshold", metavar="TEXT", help="A number, youden or shift: how its threshold is chosen."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Average trained models into one model (one ONNX graph on export), calibrated and thresholded on the images none of them trained on."""
    from pneumo.training.assemble import ensemble

    try:
        chosen: str | float = float(threshold)
    except ValueError:
        chosen = threshold
    r = ensemble(
        members,
        out=out,
        data=data,
        outliers=outliers,
        calibration=calibration,
        threshold=chosen,
        overwrite=overwrite,
        progress=sys.stderr.isatty(),
    ).report
    console.print(
        f"[bold]validation[/] (threshold {r['threshold']:.3g}, temperature {r['calibration']['temperature']:.3g}): accuracy {_fmt(r['accuracy'])} "
        f"ROC AUC {_fmt(r['roc_auc'])}  recall {_fmt(r['recall'])}  specificity {_fmt(r['specificity'])}  ECE {_fmt(r['ece'])}"
    )
    console.print(f"wrote {escape(str(out))}: use it with --model {escape(str(out))}")


@app.command(cls=_Command)
def calibrate(
    data: Optional[Path] = typer.Argument(
        None,
        metavar="LABELLED",
        help="Labelled films from your site: NORMAL/ and PNEUMONIA/ folders, a Kaggle root with --split, or a manifest (at least 20 per class).",
    ),
    out: Path = typer.Option(
        ..., "--out", metavar="PATH", help="Model folder to write; then --model DIR in predict, evaluate, serve and export."
    ),
    unlabeled: Optional[Path] = typer.Option(
        None,
        "--unlabeled",
        metavar="PATH",
        help="A folder of at least 50 of your site's films without labels: the prevalence is estimated from them and the input check learns to accept them.",
    ),
    prevalence: Optional[float] = typer.Option(
        None,
        "--prevalence",
        metavar="NUMBER",
        help="Your site's share of pneumonia, e.g. 0.3 (default: estimated from --unlabeled, else unknown: balanced accuracy).",
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", metavar="PATH", help="Run folder or checkpoint to start from (default: the bundled model)."
    ),
    split: Optional[str] = typer.Option(None, "--split", metavar="TEXT", help="Split of a Kaggle-style root."),
    min_per_class: int = typer.Option(20, "--min-per-class", metavar="N", help="Fewest distinct labelled films of each class accepted."),
    bootstrap: int = typer.Option(1000, metavar="N", help="Bootstrap resamples for the 95% intervals."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder."),
) -> None:
    """Move the model to your site: its operating point from labelled films (shrunk towards what it knew), its prevalence and input check from unlabelled ones; the weights are kept."""
    output_folder(out, "--out")
    from pneumo.evaluation.calibrate import calibrate as run_calibration

    result = run_calibration(
        data,
        out=out,
        model=model,
        unlabeled=unlabeled,
        prevalence=prevalence,
        split=split,
        min_per_class=min_per_class,
        n_boot=bootstrap,
        overwrite=overwrite,
        progress=sys.stderr.isatty(),
    )
    site = result.report
    where = {"given": "as given", "estimated": "estimated from the unlabelled films", "unknown": "unknown"}[result.prevalence_source]
    ci = (result.report.get("site") or {}).get("prevalence", {}).get("ci95")
    shown = "" if result.prevalence is None else f"{result.prevalence:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    console.print(
        f"prevalence: {shown} ({where}); the threshold is chosen for "
        + (
            "the best accuracy at that prevalence"
            if result.prevalence is not None
            else "the best balanced accuracy, as the model's own was"
        ),
        highlight=False,
    )
    if "before" in site:
        old = site["before"]["at_old_threshold"]
        table = Table(title=f"{site['n']} labelled films ({site['positives']} PNEUMONIA): the operating point before and after")
        for col in ("", "threshold", "sensitivity", "specificity", "accuracy", "ECE"):
            table.add_column(col, justify="left" if not col else "right")
        cio, ci = old["ci95"], site["ci95"]
        table.add_row(
            "before",
            f"{site['before']['threshold']:.3g}",
            _with_ci(old["recall"], cio["recall"]),
            _with_ci(old["specificity"], cio["specificity"]),
            _with_ci(old["accuracy"], cio["accuracy"]),
            _fmt(site["ece_before"]),
        )
        table.add_row(
            "after",
            f"{result.threshold:.3g}",
            _with_ci(site["recall"], ci["recall"]),
            _with_ci(site["specificity"], ci["specificity"]),
            _with_ci(site["accuracy"], ci["accuracy"]),
            _fmt(site["ece"]),
        )
        console.print(table)
        console.print(
            "measured on the films the operating point was fitted on, so optimistic; the intervals are patient-clustered 95% bootstrap intervals"
        )
    if result.refused_before is not None:
        n = result.report["site"]["unlabeled"]["n"]
        console.print(
            f"input check: {result.refused_before:.1%} of the {n} unlabelled films refused before, {result.refused_after:.1%} after "
            "(the check now also accepts films like them; adult films and non-chest images are still refused)",
            highlight=False,
        )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(f"wrote {escape(str(result.out))}: use it with --model {escape(str(result.out))}")


def _with_ci(value: float, ci: list[float]) -> str:
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


@app.command(cls=_Command)
def predict(
    paths: List[Path] = typer.Argument(
        ...,
        metavar="PATH",
        help="Image files (JPEG, PNG, DICOM, TIFF, BMP, WebP, GIF), folders (searched recursively) or quoted glob patterns.",
    ),
    model: Optional[Path] = typer.Option(None, "--model", metavar="PATH", help="Run folder or checkpoint (default: the bundled model)."),
    fmt: str = typer.Option("table", "--format", metavar="TEXT", help="table, json or csv."),
    out: Optional[Path] = typer.Option(
        None, "--out", metavar="PATH", help="Write json/csv here instead of printing (format from --format, else from the suffix)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
    cam: Optional[Path] = typer.Option(
        None, "--cam", metavar="PATH", help="Also write a Grad-CAM heatmap PNG per image into this folder (needs PyTorch)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first file that cannot be read instead of skipping it."),
    no_abstain: bool = typer.Option(
        False, "--no-abstain", help="Label images the input checks find outside what the model was trained on too (their warnings stay)."
    ),
) -> None:
    """P(pneumonia) and the label at the model's threshold for each image (JPEG, PNG, DICOM, TIFF, BMP, WebP or GIF);
    no verdict for an image outside what the model was trained on.

    --model takes a run folder, a checkpoint folder or an exported .onnx file.
    """
    from pneumo.inference.formats import format_predictions
    from pneumo.inference.predict import load_model, readable_files
    from pneumo.inference.predict import predict as run_prediction

    fmt = "json" if as_json else fmt
    if out is not None and fmt == "table":
        fmt = out.suffix.lower().lstrip(".")
        if fmt not in ("json", "csv"):
            raise PneumoError(f"cannot tell the format of {out}: name it .json or .csv, or pass --format json|csv")
    if fmt not in ("table", "json", "csv"):
        raise PneumoError(f"unknown --format {fmt!r}; use table, json or csv")
    if out is not None:
        output_file(out, "--out")
    if cam is not None:
        output_folder(cam, "--cam")
    files, unreadable = readable_files(paths, strict)  # before the model loads: a wrong path is refused at once
    loaded = load_model(model, backend="torch" if cam is not None else "auto")  # heatmaps need the network itself
    results = run_prediction(files, model=loaded, strict=strict, abstain=not no_abstain)
    results.skipped[:0] = unreadable
    _report_skipped(results.skipped, len(results) + len(results.skipped))
    if cam is not None:
        from pneumo.explain.gradcam import explain_files

        written = explain_files([r.path for r in results], loaded, out_dir=cam)
        err_console.print(f"wrote {_count(len(written), 'heatmap')} to {escape(str(cam))}", highlight=False)
    if out is not None:
        atomic_write(out, format_predictions(results, fmt).encode("utf-8", "surrogateescape"))  # names as the disk has them
        console.print(f"wrote {_count(len(results), 'prediction')} to {escape(str(out))}", highlight=False)
        return
    if fmt != "table":
        print(format_predictions(results, fmt), end="" if fmt == "csv" else "\n")
        return
    folder = _shared_folder([r.path for r in results])
    which = "bundled model" if model is None else str(model)
    table = Table(
        title=f"{_count(len(results), 'image')}{f' in {escape(folder)}' if folder else ''}",
        caption=f"{escape(which)}, threshold {results[0].threshold:.3g}",
    )
    classes = list(results[0].class_probabilities)
    table.add_column("file", overflow="fold")
    for col in ("P(pneumonia)", "label", *(f"P({c})" for c in classes if len(classes) > 2)):
        table.add_column(col)
    for r in results:
        extra = [f"{r.class_probabilities[c]:.3f}" for c in classes] if len(classes) > 2 else []
        label = "[yellow]no verdict[/]" if r.abstain else r.label + (" [yellow](!)[/]" if r.warnings else "")
        table.add_row(escape(os.path.relpath(r.path, folder) if folder else r.path), f"{r.probability:.3f}", label, *extra)
    console.print(table)
    for r in results:
        if r.abstain:
            console.print(f"[yellow]{escape(r.verdict)}:[/] {escape(r.path)}", highlight=False)
        for warning in r.warnings:
            console.print(f"[yellow]warning:[/] {escape(f'{r.path}: {warning}')}", highlight=False)
    if len(results) + len(results.skipped) > 1:  # a long table's warnings push its count off the screen: say it again last
        verdicts = Counter(r.label for r in results if not r.abstain)
        no_verdict = sum(r.abstain for r in results)
        console.print(
            f"{_count(len(results), 'film')}: "
            + ", ".join(f"{n} {label}" for label, n in sorted(verdicts.items()))
            + f", {no_verdict} without a verdict"
            + (f"; {len(results.skipped)} skipped (unreadable)" if results.skipped else ""),
            highlight=False,
        )


@models_app.command("upgrade", cls=_Command)
def models_upgrade(
    folders: List[Path] = typer.Argument(
        ..., metavar="FOLDER", help="Model or run folders written by an earlier pneumo (checkpoint format 1)."
    ),
) -> None:
    """Re-save old-format model folders in the current format, after checking their weights and every field."""
    from pneumo.models.checkpoint import FORMAT_VERSION, upgrade_checkpoint

    for folder in folders:
        done = upgrade_checkpoint(folder)
        console.print(f"{escape(str(done))}: checked and saved in checkpoint format {FORMAT_VERSION}", highlight=False, soft_wrap=True)


def _shared_folder(paths: list[str]) -> str:
    """The folder every path is in, when there is one below the root: the table then lists names, not long paths."""
    try:
        shared = os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # absolute and relative paths mixed
        return ""
    return shared if shared not in ("", ".", os.sep) else ""


@app.command("predict-archive", cls=_Command)
def predict_archive(
    source: Path = typer.Argument(..., metavar="SOURCE", help="A folder (searched recursively) or a CSV manifest with a 'path' column."),
    out: Path = typer.Option(
        ..., "--out", metavar="PATH", help="results.csv (or .parquet with pyarrow); unreadable files go to results.skipped.csv."
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", metavar="PATH", help="Run folder, checkpoint or .onnx export (default: the bundled model)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", metavar="N", help="Images per batch."),
    workers: int = typer.Option(0, "--workers", metavar="N", help="Decoding threads (0: one per CPU, up to 4)."),
    backend: str = typer.Option("auto", "--backend", metavar="TEXT", help="auto, onnx or torch."),
    resume: bool = typer.Option(False, "--resume", help="Skip the files already in --out and append the rest."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first file that cannot be read."),
    no_abstain: bool = typer.Option(
        False, "--no-abstain", help="Label images the input checks find outside what the model was trained on too."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar and no progress lines; warnings still show."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray Data (ONNX actors); needs pneumo[ray]."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="TEXT", help="A Ray cluster (default: a local instance)."),
    actors: int = typer.Option(2, "--actors", metavar="N", help="Ray actors, one CPU each."),
) -> None:
    """Classify a large archive as a stream: bounded memory, results appended as they come, --resume after a stop."""
    output_file(out, "--out")
    _quiet_log(quiet)
    if ray:
        if resume or strict or no_abstain or backend == "torch":
            raise PneumoError(
                "--ray runs the ONNX export and has no --resume, --strict, --no-abstain or torch backend; drop those or run without --ray"
            )
        from pneumo.inference.ray_batch import predict_archive_ray

        summary = predict_archive_ray(source, out, model=model, batch_size=batch_size, concurrency=actors, address=ray_address)
    else:
        from pneumo.inference.batch import predict_archive as run_archive

        summary = run_archive(
            source,
            out=out,
            model=model,
            batch_size=batch_size,
            workers=workers,
            resume=resume,
            strict=strict,
            progress=sys.stderr.isatty() and not quiet,
            backend=backend,
            abstain=not no_abstain,
        )
    console.print(
        f"wrote {summary.done} predictions to {escape(str(summary.out))} ({summary.images_per_second:.0f} images/s)"
        + (f"; {summary.already_done} were already there" if summary.already_done else "")
    )
    if summary.skipped:
        err_console.print(f"[yellow]skipped {summary.skipped} unreadable files:[/] see {escape(str(summary.skipped_out))}")


@app.command(cls=_Command)
def export(
    out: Path = typer.Option(Path("pneumo.onnx"), "--out", metavar="PATH", help="The .onnx file to write (its .json goes beside it)."),
    model: Optional[Path] = typer.Option(None, "--model", metavar="PATH", help="Run folder or checkpoint (default: the bundled model)."),
    fmt: str = typer.Option("onnx", "--format", metavar="TEXT", help="Export format; onnx is the one there is."),
    check: Optional[List[Path]] = typer.Option(
        None, "--check", metavar="PATH", help="Images (files, folders, globs) for the parity check; default: 8 synthetic images."
    ),
    opset: int = typer.Option(17, metavar="N", help="ONNX opset."),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="An int8 graph (static quantization, per channel, calibrated on the model's training films), checked by its verdicts on its validation films; its input check is refitted on its own features.",
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", metavar="PATH", help="With --int8: where the model's training data is now, if not where its recipe says."
    ),
) -> None:
    """Export a model to ONNX, checked against PyTorch; `pneumo predict --model FILE.onnx` runs it without PyTorch."""
    if fmt != "onnx":
        raise PneumoError(f"unknown --format {fmt!r}; onnx is the export format pneumo has")
    output_file(out, "--out")
    output_file(out.with_suffix(".json"), "--out's metadata file")
    import numpy as np

    from pneumo.data.preprocess import load_image
    from pneumo.deploy.onnx import export
    from pneumo.inference.loading import load_model
    from pneumo.utils.walk import expand_paths

    loaded = load_model(model, backend="torch")
    images = np.stack([load_image(f, loaded.image_size) for f in expand_paths(check)[:32]]) if check else None
    result = export(loaded, out=out, opset=opset, check_images=images, int8=int8, data=data, progress=sys.stderr.isatty())
    if result.int8 is not None:
        q, fit = result.int8, result.int8["input_check"]
        console.print(
            f"wrote {escape(str(result.path))} (+ .json), int8: the same verdict as PyTorch for {q['val_same_verdict']:.2%} of "
            f"{q['val_films']} validation films (largest |dP| {q['val_max_abs_diff']:.3f}); its input check refitted on its own features: "
            f"{fit['val_flagged'] / max(1, fit['n_val']):.1%} of validation children flagged, {fit['outliers_caught']} of {fit['n_outliers']} "
            "outlier films from unseen sources caught",
            highlight=False,
        )
        return
    console.print(
        f"wrote {escape(str(result.path))} (+ .json); largest difference from PyTorch on {result.n_images} "
        f"{'images' if check else 'synthetic images'}: {result.max_abs_diff:.1e}"
    )


@app.command(cls=_Command)
def serve(
    model: Optional[Path] = typer.Option(
        None, "--model", metavar="PATH", help="Run folder, checkpoint or .onnx export (default: the bundled model)."
    ),
    host: str = typer.Option("127.0.0.1", metavar="TEXT", help="Address to listen on; the default is this machine only."),
    port: int = typer.Option(8000, metavar="N", help="Port to listen on."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", metavar="NUMBER", help="Largest upload accepted."),
) -> None:
    """A web page and an HTTP API (POST /v1/predict, GET /v1/model, GET /healthz, docs at /docs)."""
    from pneumo.service.app import serve as run_service

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    service_log = logging.getLogger("pneumo.service")
    service_log.addHandler(handler)
    service_log.setLevel(logging.INFO)
    service_log.propagate = False  # a server's lines have their time; not again through the plain `pneumo` lines
    run_service(model, host=host, port=port, max_upload_mb=max_upload_mb)


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """The architectures `--set model=NAME` accepts; `pneumo models upgrade FOLDER` re-saves old model folders."""
    if ctx.invoked_subcommand is not None:
        return
    from pneumo.models import list_models, model_spec

    table = Table()
    for col in ("name", "default size", "description"):
        table.add_column(col)
    for name in list_models():
        spec = model_spec(name)
        table.add_row(name, str(spec.image_size), spec.description)
    console.print(table)


# modules of the `train` extra: the base install (onnxruntime) only predicts
_TRAIN_EXTRAS = {"torch", "monai", "sklearn", "safetensors", "matplotlib", "onnx"}
_SERVE_EXTRAS = {"fastapi", "uvicorn", "starlette", "threadpoolctl"}
_RAY_EXTRAS = {"ray", "pyarrow"}


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler, `kill`) stops as cleanly as Ctrl-C


_default_showwarning = warnings.showwarning


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None, line: str | None = None
) -> None:
    """pneumo's own warnings (e.g. an image cache that cannot be written) as one `warning:` line on stderr."""
    if category.__module__.startswith("pneumo"):
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)  # type: ignore[arg-type]


def _option_value(argv: list[str], name: str) -> str | None:
    """The value given to `name` on the command line (`--out X` or `--out=X`), if any."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


_OPTIONAL_VALUES = ("--mlflow",)  # options whose value may be left out (Typer has no such option): "" means the default


def _fill_optional_values(argv: list[str]) -> list[str]:
    """`pneumo train --mlflow --out X` -> `... --mlflow "" --out X`."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in _OPTIONAL_VALUES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append("")
    return out


# an output that cannot take what is written (stdout on a full disk or /dev/full, a failing device)
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _output_failed(exc: OSError) -> None:
    """One line on stderr and exit 2; stdout is pointed at /dev/null first, so the interpreter's
    own flush at exit does not fail again on what is still buffered."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    err_console.print(f"[bold red]error:[/] cannot write the output: {escape(exc.strerror or str(exc))}", highlight=False, soft_wrap=True)
    sys.exit(2)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C/SIGTERM exit 130."""
    signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = _show_warning
    _show_log()
    try:
        os.getcwd()
    except OSError:  # PyTorch's MKL would die loading its libraries from a deleted folder, with a fatal error and no advice
        err_console.print(
            "[bold red]error:[/] the current folder no longer exists (deleted or unmounted): cd to a folder that does", highlight=False
        )
        sys.exit(2)
    try:  # a name the terminal's encoding cannot show (LC_ALL=C, PYTHONIOENCODING=ascii) is shown escaped, never a traceback
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    except (AttributeError, ValueError):  # replaced by a stream without it, or closed
        pass
    try:
        app(args=_fill_optional_values(sys.argv[1:]))  # Typer handles usage errors and turns Ctrl-C into exit code 130
    except PneumoError as exc:  # before OSError: a WriteError is both
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # one line, as it was written
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        _output_failed(exc)
    except ModuleNotFoundError as exc:
        if exc.name in _SERVE_EXTRAS:
            err_console.print(
                f"[bold red]error:[/] `pneumo serve` needs the serve extras ({exc.name} is not installed): pip install 'pneumo\\[serve]'",
                highlight=False,
            )
            sys.exit(2)
        if exc.name in _RAY_EXTRAS:
            err_console.print(f"[bold red]error:[/] this needs {exc.name}: pip install 'pneumo\\[ray]'", highlight=False)
            sys.exit(2)
        if exc.name not in _TRAIN_EXTRAS:
            raise
        err_console.print(
            f"[bold red]error:[/] this command needs PyTorch and the training extras ({exc.name} is not installed): "
            "pip install 'pneumo\\[train]'. Prediction alone works without them.",
            highlight=False,
        )
        sys.exit(2)
    except SystemExit as exc:
        if exc.code == 130 and sys.argv[1:2] == ["train"]:
            run = _option_value(sys.argv, "--resume") or _option_value(sys.argv, "--out") or "RUN_DIR"
            err_console.print(
                f"interrupted: checkpoints written so far are complete ({escape(run)}/checkpoints/last); continue with `pneumo train --resume {escape(run)}`",
                highlight=False,
                soft_wrap=True,
            )
        elif exc.code == 130 and sys.argv[1:3] == ["data", "download"]:
            err_console.print("interrupted: the partial download is kept; run the same command again to resume it")
        elif exc.code == 130:
            err_console.print("interrupted")
        elif exc.code in (0, None):  # done: what is still buffered must reach stdout, or say why not
            try:
                sys.stdout.flush()
            except OSError as failed:
                if failed.errno not in _OUTPUT_ERRNOS:
                    raise
                _output_failed(failed)
        raise
    finally:
        # the command is done: exempt what it built from the collections the interpreter runs as it
        # exits, over the hundreds of thousands of objects PyTorch, scikit-learn and matplotlib leave
        gc.freeze()
