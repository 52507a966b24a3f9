"""Find the images of a dataset and what each one is: label, pathogen, patient.

Accepted layouts:
- a Kaggle-style root with `train/ val/ test/` split folders (found also when nested, as in
  the Kaggle archive's `chest_xray/chest_xray/`), each with `NORMAL/` and `PNEUMONIA/`;
- a single folder with class subfolders (names are case-insensitive);
- a CSV manifest with columns `path,label` and optionally `patient_id`, `pathogen`, `split`
  (relative paths are read from the manifest's folder).
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pneumo.errors import PneumoError

__all__ = [
    "CLASSES",
    "PATHOGEN_CLASSES",
    "IMAGE_SUFFIXES",
    "Record",
    "Dataset",
    "discover",
    "parse_filename",
    "records_from_folder",
]

CLASSES = ("NORMAL", "PNEUMONIA")
PATHOGEN_CLASSES = ("normal", "bacteria", "virus")
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".dcm", ".dicom"})
_SPLIT_NAMES = ("train", "val", "test")
_JUNK_DIRS = frozenset({"__macosx", ".ds_store", "@eadir", "$recycle.bin"})

_PATHOGEN_ALIASES = {"bacteria": "bacteria", "bacterial": "bacteria", "virus": "virus", "viral": "virus"}
_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_IM_SERIES = re.compile(r"^((?:normal2-)?im-\d+)-\d+", re.IGNORECASE)


@dataclass(frozen=True)
class Record:
    """One image: where it is and what it shows."""

    path: Path
    label: str  # "NORMAL" or "PNEUMONIA"
    pathogen: str | None  # "bacteria" / "virus" for pneumonia when known, else None
    patient_id: str

    def target(self, task: str) -> int:
        """The class index for a task: binary 0/1, pathogen 0 normal / 1 bacteria / 2 virus."""
        if task == "binary":
            return CLASSES.index(self.label)
        if self.label == "NORMAL":
            return 0
        if self.pathogen is None:
            raise PneumoError(f"{self.path}: pneumonia image with unknown pathogen cannot be used for the pathogen task")
        return PATHOGEN_CLASSES.index(self.pathogen)


@dataclass
class Dataset:
    """Records per split as found on disk; a class-folder directory gives the single split 'all'."""

    root: Path
    splits: dict[str, list[Record]]
    layout: str  # "kaggle" | "folders" | "manifest"

    def split(self, name: str | None) -> list[Record]:
        """Records of one split; with no name, the only split (or an error saying which exist)."""
        if name is None:
            if len(self.splits) == 1:
                return next(iter(self.splits.values()))
            raise PneumoError(f"{self.root} has splits {', '.join(self.splits)}: choose one with --split")
        if name not in self.splits:
            raise PneumoError(f"{self.root} has no split '{name}'; it has: {', '.join(self.splits)}")
        return self.splits[name]


def parse_filename(name: str) -> tuple[str, str | None]:
    """Patient id and pathogen from a Kermany file name.

    Example:
        >>> parse_filename("person1000_virus_1681.jpeg")
        ('person1000', 'virus')
        >>> parse_filename("NORMAL2-IM-1427-0001.jpeg")
        ('NORMAL2-IM-1427', None)
    """
    stem = Path(name).stem
    if m := _PERSON.match(stem):
        return m.group(1).lower(), m.group(2).lower()
    if m := _IM_SERIES.match(stem):
        return m.group(1).upper(), None
    lowered = stem.lower()
    pathogen = "bacteria" if "bacteria" in lowered else "virus" if "virus" in lowered else None
    return stem, pathogen


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.startswith("._") or name.lower() in _JUNK_DIRS


def _child_dirs(folder: Path) -> dict[str, Path]:
    """Subfolders by lower-cased name, junk left out."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise PneumoError(f"cannot read folder {folder}: {exc.strerror}") from None
    return {e.name.lower(): Path(e.path) for e in entries if e.is_dir() and not _is_junk(e.name)}


def _image_files(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_junk(d))
        files += [Path(dirpath, f) for f in sorted(filenames) if not _is_junk(f) and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return files


def records_from_folder(folder: Path) -> list[Record]:
    """Records of a folder with NORMAL/ and PNEUMONIA/ subfolders (any case)."""
    children = _child_dirs(folder)
    missing = [c for c in CLASSES if c.lower() not in children]
    if missing:
        raise PneumoError(
            f"{folder} has no {' or '.join(m + '/' for m in missing)} folder; expected class folders "
            f"NORMAL/ and PNEUMONIA/ (found: {', '.join(sorted(children)) or 'none'})"
        )
    records = []
    for label in CLASSES:
        files = _image_files(children[label.lower()])
        if not files:
            raise PneumoError(f"class folder {children[label.lower()]} has no .jpeg/.jpg/.png images")
        for path in files:
            patient, pathogen = parse_filename(path.name)
            records.append(Record(path, label, pathogen if label == "PNEUMONIA" else None, patient))
    return records


def _find_kaggle_root(folder: Path, depth: int = 3) -> Path | None:
    """The first folder (breadth-first, shallow) holding a train/ or test/ split with class folders."""
    level = [folder]
    for _ in range(depth + 1):
        nxt = []
        for candidate in level:
            children = _child_dirs(candidate)
            for split in _SPLIT_NAMES:
                if split in children and {c.lower() for c in CLASSES} <= set(_child_dirs(children[split])):
                    return candidate
            nxt += sorted(children.values())
        level = nxt
    return None


def _read_manifest(path: Path) -> dict[str, list[Record]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if "path" not in columns or "label" not in columns:
                raise PneumoError(f"manifest {path} needs a header with at least 'path' and 'label' columns")
            rows = list(reader)
    except UnicodeDecodeError:
        raise PneumoError(f"manifest {path} is not a UTF-8 CSV file") from None
    splits: dict[str, list[Record]] = {}
    for lineno, row in enumerate(rows, start=2):
        get = lambda key: (row.get(columns[key]) or "").strip() if key in columns else ""  # noqa: E731
        raw_label = get("label").lower()
        pathogen = _PATHOGEN_ALIASES.get(get("pathogen").lower(), get("pathogen").lower() or None)
        if raw_label in _PATHOGEN_ALIASES:
            pathogen, raw_label = _PATHOGEN_ALIASES[raw_label], "pneumonia"
        if raw_label not in ("normal", "pneumonia", "0", "1"):
            raise PneumoError(f"manifest {path} line {lineno}: label {get('label')!r} is not NORMAL or PNEUMONIA")
        label = "PNEUMONIA" if raw_label in ("pneumonia", "1") else "NORMAL"
        if pathogen not in (None, "bacteria", "virus"):
            raise PneumoError(f"manifest {path} line {lineno}: pathogen {pathogen!r} is not bacteria or virus")
        file = Path(get("path"))
        if not get("path"):
            raise PneumoError(f"manifest {path} line {lineno}: empty path")
        if not file.is_absolute():
            file = path.parent / file
        if not file.is_file():
            raise PneumoError(f"manifest {path} line {lineno}: file {file} does not exist")
        patient, parsed_pathogen = parse_filename(file.name)
        record = Record(
            file,
            label,
            (pathogen or parsed_pathogen) if label == "PNEUMONIA" else None,
            get("patient_id") or patient,
        )
        splits.setdefault(get("split").lower() or "all", []).append(record)
    if not splits:
        raise PneumoError(f"manifest {path} lists no images")
    return splits


def discover(source: str | Path) -> Dataset:
    """Find every image under a dataset root, class folder or manifest.

    Example:
        >>> ds = discover("../shared/data")
        >>> sorted(ds.splits), ds.layout
        (['train'], 'kaggle')
    """
    root = Path(source).expanduser()
    if not root.exists():
        raise PneumoError(f"data path {root} does not exist; give a dataset folder or a CSV manifest")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise PneumoError(f"{root} is a file but not a .csv manifest (columns path,label[,patient_id])")
        return Dataset(root, _read_manifest(root), "manifest")
    children = _child_dirs(root)
    if {c.lower() for c in CLASSES} <= set(children):
        return Dataset(root, {"all": records_from_folder(root)}, "folders")
    kaggle = _find_kaggle_root(root)
    if kaggle is None:
        raise PneumoError(
            f"no dataset found in {root}: expected train/ val/ test/ split folders, or NORMAL/ and "
            "PNEUMONIA/ class folders, or a CSV manifest"
        )
    splits = {}
    for name, folder in _child_dirs(kaggle).items():
        if name in _SPLIT_NAMES:
            splits[name] = records_from_folder(folder)
    return Dataset(kaggle, {name: splits[name] for name in _SPLIT_NAMES if name in splits}, "kaggle")
