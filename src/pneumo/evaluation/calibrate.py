"""Moving a model to a new site: its operating point from a few of the site's labelled films, its
prevalence and input check from the site's unlabelled films.

A model's probabilities, threshold and input check were set on its own hospital's films; another
site's differ (exposure, framing, population, prevalence). `calibrate` treats what the model
knows as a prior and the site's films as evidence (`pneumo.evaluation.calibration`):

- labelled films (at least 20 of each class) refit the line of the log-likelihood ratio of
  pneumonia in the model's log-odds, shrunk towards the line validation gave, as far as the
  films can justify: 40 films move it a little, 400 further;
- the site's prevalence is given (`prevalence`), or estimated from unlabelled films by EM; with
  it, films are labelled for the best accuracy at that prevalence (P >= 0.5 on probabilities
  calibrated to it); without it, for the best balanced accuracy, as the model was;
- unlabelled films (at least 50) also widen the input check along the site's own variation
  (`pneumo.inference.fitting.fit_site_check`): the site's children are judged, adult films
  and non-chest images are still refused.

The weights are not touched; the result is a model folder that every command takes as `--model DIR`.

Example:
    >>> result = calibrate("site/labelled", unlabeled="site/archive", out="models/site")
    >>> result.threshold, result.prevalence, result.refused_after
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.data.cache import DecodedDataset, decode_dataset, file_digests
from pneumo.data.layout import DATA_ACCEPTED, Record, discover
from pneumo.errors import PneumoError, check_flag, check_number, check_path, check_text, check_whole
from pneumo.evaluation.calibration import (
    CalibrationPrior,
    estimate_prevalence,
    expected_calibration_error,
    log_odds,
    recalibrate,
    site_point,
)
from pneumo.evaluation.metrics import check_n_boot
from pneumo.evaluation.overlap import copy_training_films, overlap_warning, own_films, training_overlap
from pneumo.evaluation.report import metrics_report, write_report
from pneumo.inference.features import save_feature_check
from pneumo.inference.torch_backend import feature_rows
from pneumo.inference.fitting import fit_site_check
from pneumo.inference.loading import check_model, load_model
from pneumo.inference.torch_backend import TorchModel
from pneumo.models.checkpoint import copy_checkpoint, read_meta, write_meta
from pneumo.models.folders import prepare_output_folder
from pneumo.models.meta import CheckpointMeta
from pneumo.tasks import BINARY, CLASSES, pneumonia_probability
from pneumo.utils.walk import image_files
from pneumo.viz.figures import reliability_plot

__all__ = ["MIN_PER_CLASS", "MIN_UNLABELED", "WIDE_INTERVAL", "SiteCalibration", "calibrate"]

MIN_PER_CLASS = 20  # fewer films per class cannot place a threshold with any confidence
MIN_UNLABELED = 50  # fewer unlabelled films describe neither a prevalence nor a site's variation
WIDE_INTERVAL = 0.2  # a 95% interval of sensitivity or specificity wider than this is warned about
POOR = 0.8  # a site sensitivity or specificity below this, even in-sample, says the model does not separate its films
_OWN_FILMS_SHARE = 0.5  # unlabelled films of which at least this share are the model's own are refused whole


@dataclass
class SiteCalibration:
    """What `calibrate` did: the model folder it wrote, the new operating point, the report, and warnings.

    `prevalence` is the share of pneumonia the threshold was chosen for (None: unknown, so balanced
    accuracy), `prevalence_source` says where it came from ("given", "estimated" or "unknown");
    `refused_before`/`refused_after` are the shares of the unlabelled films the input check refused.
    """

    out: Path
    temperature: float
    logit_offset: float
    threshold: float
    prevalence: float | None
    prevalence_source: str
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    refused_before: float | None = None
    refused_after: float | None = None


def _default_prior(meta: CheckpointMeta) -> CalibrationPrior:
    """A model trained before pneumo recorded its validation evidence: its operating point as the prior's
    centre (its threshold taken as the balanced one), the default widths, a prevalence of one half."""
    return CalibrationPrior(threshold=meta.threshold, temperature=meta.temperature)


def _base_log_odds(probs: np.ndarray, meta: CheckpointMeta, prior: CalibrationPrior) -> np.ndarray:
    """The log-odds of pneumonia the prior's operating point gives (its temperature, no offset), from
    probabilities the model gave at its own (a model calibrated to a site before included)."""
    p = pneumonia_probability(probs)
    return (log_odds(p) - meta.logit_offset) * (meta.temperature / prior.temperature)


def _distinct(dataset: DecodedDataset) -> tuple[DecodedDataset, int]:
    """The dataset with each film's content once (the first copy kept), and how many copies were dropped."""
    digests = file_digests([r.path for r in dataset.records], write_index=False)
    seen: set[str] = set()
    keep = []
    for i, digest in enumerate(digests):
        if digest not in seen:
            seen.add(digest)
            keep.append(i)
    if len(keep) == len(dataset.records):
        return dataset, 0
    return dataclasses.replace(
        dataset,
        records=[dataset.records[i] for i in keep],
        images=dataset.images[keep],
        infos=[dataset.infos[i] for i in keep] if dataset.infos else [],
    ), len(dataset.records) - len(keep)


def _labelled_films(
    data: str | Path, split: str | None, size: int, min_per_class: int, progress: bool
) -> tuple[DecodedDataset, dict[str, Any]]:
    """The site's labelled films, decoded, each content once; refused unless both classes have `min_per_class` distinct readable films."""
    records = discover(data).split(split)
    counts = Counter(r.label for r in records)
    if len(counts) < 2:
        only = next(iter(counts), "no")
        raise PneumoError(
            f"{data} holds {only} films only; calibrating to a site needs labelled films of both classes (NORMAL and PNEUMONIA)"
        )
    _enough(counts, min_per_class, data, "")
    dataset = decode_dataset(records, size, progress=progress)
    dataset, copies = _distinct(dataset)
    counts = Counter(r.label for r in dataset.records)
    if dataset.skipped or copies:
        why = ", ".join(
            filter(
                None, [f"{len(dataset.skipped)} unreadable" if dataset.skipped else "", f"{copies} copies of other films" if copies else ""]
            )
        )
        _enough(counts, min_per_class, data, f" distinct readable ({why} left out)")
    return dataset, {"skipped": len(dataset.skipped), "duplicates": copies}


def _enough(counts: Counter, min_per_class: int, data: str | Path, which: str) -> None:
    if min(counts.get(c, 0) for c in CLASSES) < min_per_class:
        raise PneumoError(
            f"calibrating to a site needs at least {min_per_class} labelled films of each class; {data} has "
            f"{counts.get('NORMAL', 0)} NORMAL and {counts.get('PNEUMONIA', 0)} PNEUMONIA{which} films: add films of the class that is short"
        )


def _labelled_folders(folder: Path) -> list[str]:
    """Subfolders (at any depth) named as a label: NORMAL/ or PNEUMONIA/, any case."""
    return sorted({str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir() and p.name.upper() in CLASSES})[:4]


def _unlabeled_films(folder: str | Path, size: int, model_folder: Path | None, progress: bool) -> tuple[DecodedDataset, dict[str, Any]]:
    """The site's unlabelled films, decoded, each content once, none of the model's own; refused when
    the folder holds labels, is mostly the model's own films, or leaves fewer than MIN_UNLABELED."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PneumoError(f"--unlabeled {folder} is not a folder; give a folder of the site's films without labels")
    labelled = _labelled_folders(root)
    if labelled:
        raise PneumoError(
            f"--unlabeled {folder} holds labelled class folders ({', '.join(labelled)}): give labelled films as the first argument "
            "and only films without labels to --unlabeled"
        )
    files = image_files(root)
    if len(files) < MIN_UNLABELED:
        raise PneumoError(f"--unlabeled {folder} has {len(files)} image files; a site's unlabelled films must be at least {MIN_UNLABELED}")
    records = [Record(path, "NORMAL", None, path.stem) for path in files]  # placeholder labels: only the films are used
    try:
        dataset = decode_dataset(records, size, progress=progress)
    except PneumoError as exc:
        raise PneumoError(f"--unlabeled {folder}: {exc}") from None
    dataset, copies = _distinct(dataset)
    notes = {"files": len(files), "skipped": len(dataset.skipped), "duplicates": copies, "own_films": 0}
    mine = own_films(model_folder, dataset.records)
    if mine is not None and any(mine):
        share = sum(mine) / len(mine)
        if share >= _OWN_FILMS_SHARE:
            raise PneumoError(
                f"--unlabeled {folder}: {sum(mine)} of its {len(mine)} films are films this model was trained or validated on; "
                "they teach nothing about a site: give films from the site"
            )
        keep = [i for i, m in enumerate(mine) if not m]
        dataset = dataclasses.replace(
            dataset,
            records=[dataset.records[i] for i in keep],
            images=dataset.images[keep],
            infos=[dataset.infos[i] for i in keep] if dataset.infos else [],
        )
        notes["own_films"] = sum(mine)
    if len(dataset.records) < MIN_UNLABELED:
        left_out = ", ".join(
            f"{n} {what}"
            for what, n in (
                ("unreadable", notes["skipped"]),
                ("copies of other films", copies),
                ("the model's own films", notes["own_films"]),
            )
            if n
        )
        raise PneumoError(
            f"--unlabeled {folder} has {len(dataset.records)} distinct readable films of the site ({left_out} left out); at least {MIN_UNLABELED} are needed"
        )
    return dataset, notes


def _warnings(report: dict[str, Any]) -> list[str]:
    """What the user must know about the new operating point on the labelled films: it is uncertain, or poor."""
    out = []
    for name, what in (("recall", "sensitivity"), ("specificity", "specificity")):
        lo, hi = report["ci95"][name]
        if not report[name] >= POOR:
            out.append(
                f"{what} on these films is only {report[name]:.2f} at the new threshold: the model does not separate this site's "
                "films well; check that they are frontal chest films of children, or do not use the model here"
            )
        elif not hi - lo <= WIDE_INTERVAL:
            out.append(
                f"the 95% interval of {what} is {lo:.2f}-{hi:.2f}, wider than {WIDE_INTERVAL}: the new operating point is uncertain; label more films"
            )
    return out


def _prevalence_interval(llr: np.ndarray, n_boot: int, seed: int = 0) -> list[float] | None:
    """A 95% bootstrap interval of the EM prevalence, films resampled (at most 200 resamples; None without any)."""
    if n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    draws = [estimate_prevalence(llr[rng.integers(0, len(llr), len(llr))]) for _ in range(min(n_boot, 200))]
    return [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]


def calibrate(
    labelled: str | Path | None = None,
    *,
    out: str | Path,
    model: str | Path | TorchModel | None = None,
    unlabeled: str | Path | None = None,
    prevalence: float | None = None,
    split: str | None = None,
    min_per_class: int = MIN_PER_CLASS,
    n_boot: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> SiteCalibration:
    """Move a model to a site and write the result as a model folder (module docstring).

    Args:
        labelled: the site's labelled films (NORMAL/ and PNEUMONIA/ folders, a Kaggle-style root with
            `split`, or a CSV manifest), at least `min_per_class` distinct readable films of each class; or None.
        out: the model folder to write (`--model out` then works everywhere).
        model: a run folder or checkpoint, or None for the bundled model (needs PyTorch).
        unlabeled: a folder of at least MIN_UNLABELED of the site's films without labels: the
            prevalence is estimated from them and the input check widened to them.
        prevalence: the site's share of pneumonia, when known (it wins over the estimate).

    Raises:
        PneumoError: nothing to calibrate on, a bad prevalence, too few films, labelled films in
            `unlabeled`, the model's own films as the site's; nothing is written then.
    """
    check_path("labelled", labelled, what=DATA_ACCEPTED, optional=True)
    check_path("out", out, what="the model folder to write")
    check_model("model", model)
    check_path("unlabeled", unlabeled, what="a folder of the site's films without labels", optional=True)
    check_number("prevalence", prevalence, minimum=0, maximum=1, exclusive=True, optional=True)
    check_text("split", split, optional=True)
    min_per_class, n_boot = check_whole("min_per_class", min_per_class, minimum=1), check_n_boot(n_boot)
    overwrite, progress = check_flag("overwrite", overwrite), check_flag("progress", progress)
    if labelled is None and unlabeled is None and prevalence is None:
        raise PneumoError(
            "give the site's labelled films, --unlabeled FOLDER of its films without labels, or --prevalence; nothing was given to calibrate on"
        )
    loaded = load_model(model, backend="torch")
    if not isinstance(loaded, TorchModel) or loaded.folder is None:
        raise PneumoError(
            "calibrate writes a PyTorch checkpoint and needs one to start from: give --model a run or checkpoint folder (pip install 'pneumo[train]' for the bundled one)"
        )
    if Path(out).expanduser().resolve() == loaded.folder.resolve():
        raise PneumoError(f"--out {out} is the model being calibrated; write the calibrated model to another folder")
    meta = loaded.meta
    prior = CalibrationPrior.from_dict(meta.calibration_prior) if meta.calibration_prior else _default_prior(meta)
    check = loaded.feature_check
    if unlabeled is not None and (check is None or check.outlier_rows is None):
        raise PneumoError(
            "this model's input check keeps no outlier films' statistics, so it cannot be widened to a site's films; refit it first with `pneumo ensemble MODEL --out DIR`"
        )
    labelled_set, labelled_notes = (
        _labelled_films(labelled, split, loaded.image_size, min_per_class, progress) if labelled is not None else (None, {})
    )
    unlabeled_set, unlabeled_notes = (
        _unlabeled_films(unlabeled, loaded.image_size, loaded.folder, progress) if unlabeled is not None else (None, {})
    )
    out = prepare_output_folder(out, overwrite)  # an old output is replaced only if it is pneumo's, and says so

    base = dataclasses.replace(
        loaded, check=check.with_site(None) if check is not None else None
    )  # the model's own check, without a previous site's
    report: dict[str, Any] = {"prior": prior.to_dict()}
    u_labelled = y = probs_before = rows_unl = u_unlabeled = None
    if labelled_set is not None:
        y = np.array([r.target(BINARY) for r in labelled_set.records])
        probs_before = loaded.class_probabilities(labelled_set.images)
        u_labelled = _base_log_odds(probs_before, meta, prior)
    refused_before = None
    if unlabeled_set is not None:
        probs_unl, rows_unl = feature_rows(base, unlabeled_set.images)
        u_unlabeled = _base_log_odds(probs_unl, meta, prior)
        refused_before = float(check.own_flags(check.scores(rows_unl)).mean())
    point = site_point(prior, u_labelled, y, u_unlabeled, prevalence)
    prevalence_ci = _prevalence_interval(point.log_likelihood_ratio(u_unlabeled), n_boot) if point.source == "estimated" else None
    new_meta = meta.replace(
        temperature=point.temperature, logit_offset=point.logit_offset, threshold=round(point.threshold, 6), threshold_method="site"
    )
    warnings: list[str] = []

    new_check, refused_after = check, None
    if unlabeled_set is not None:
        new_check = check.with_site(fit_site_check(check, rows_unl))
        refused_after = float(new_check.flags(new_check.scores(rows_unl)).mean())
    elif check is not None:
        new_check = check.with_site(None)  # a previous site's widening belongs to that site
    if labelled_set is not None:
        records = labelled_set.records
        probs_after = recalibrate(probs_before, meta.temperature, meta.logit_offset, new_meta.temperature, new_meta.logit_offset)
        report |= metrics_report(records, probs_after, loaded.task, new_meta.threshold, n_boot, seed=0)
        report["ece_before"] = expected_calibration_error(y, pneumonia_probability(probs_before))
        report["before"] = {
            "threshold": meta.threshold,
            "temperature": meta.temperature,
            "logit_offset": meta.logit_offset,
            "at_old_threshold": metrics_report(records, probs_before, loaded.task, meta.threshold, n_boot, seed=0),
        }
        warnings = _warnings(report)
        own = overlap_warning(training_overlap(loaded.folder, records))
        if own:  # a site is its own films: the model's training films say how it fits those, not the site
            warnings.append(
                own.split(", so these metrics")[0]
                + ", so this calibration fits the model's own films, not the site's; give films it never saw"
            )
    decision = (
        f"accuracy at a prevalence of {point.prevalence:.3g}"
        if point.prevalence is not None
        else "balanced accuracy (the site's prevalence is unknown)"
    )
    site = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labelled": None
        if labelled_set is None
        else {
            "data": str(labelled),
            "split": split,
            "fingerprint": labelled_set.fingerprint,
            "n": len(labelled_set.records),
            "n_normal": int((y == 0).sum()),
            "n_pneumonia": int((y == 1).sum()),
            **labelled_notes,
        },
        "unlabeled": None
        if unlabeled_set is None
        else {
            "data": str(unlabeled),
            "fingerprint": unlabeled_set.fingerprint,
            "n": len(unlabeled_set.records),
            **unlabeled_notes,
            "refused_before": refused_before,
            "refused_after": refused_after,
        },
        "prevalence": {"value": point.prevalence, "source": point.source, "ci95": prevalence_ci},
        "decision": decision,
        "line": {"slope": point.slope, "offset": point.offset},
        "previous": {"threshold": meta.threshold, "temperature": meta.temperature, "logit_offset": meta.logit_offset},
        "warnings": warnings,
    }
    if labelled_set is not None:
        site["labelled_metrics"] = {k: report[k] for k in ("recall", "specificity", "accuracy", "ece")} | {
            "ci95": {k: report["ci95"][k] for k in ("recall", "specificity", "accuracy")}
        }
    new_meta = new_meta.replace(site_calibration=site)
    report["site"] = site

    copy_checkpoint(loaded.folder, out)
    copy_training_films(loaded.folder, out)
    if new_check is not None:
        save_feature_check(new_check, out)  # the site's check beside the weights, sealed into the metadata below
    write_meta(
        out,
        read_meta(out).replace(
            **{f: getattr(new_meta, f) for f in ("temperature", "logit_offset", "threshold", "threshold_method", "site_calibration")}
        ),
    )
    write_report(report, out / "site_calibration.json")
    if labelled_set is not None:
        reliability_plot(
            report["reliability"], report["ece"], out / "reliability.png", title=f"{Path(str(labelled)).name}: after calibration"
        )
    return SiteCalibration(
        out,
        new_meta.temperature,
        new_meta.logit_offset,
        new_meta.threshold,
        point.prevalence,
        point.source,
        report,
        warnings,
        refused_before,
        refused_after,
    )
