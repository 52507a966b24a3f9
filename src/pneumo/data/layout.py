"""Find the images of a dataset and what each one is: label, pathogen, patient.

Accepted layouts:
- a Kaggle-style root with `train/ val/ test/` split folders (found also when nested, as in
  the Kaggle archive's `chest_xray/chest_xray/`), each with `NORMAL/` and `PNEUMONIA/`;
- a single folder with class subfolders (names are case-insensitive);
- a CSV manifest with columns `path,label` and optionally `patient_id`, `pathogen`, `split`
  (relative paths are read from the manifest's folder).

Folders are searched recursively by `pneumo.utils.walk.image_files`, the walker every command
shares (junk folders and symlink loops left out).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pneumo.data.manifest import manifest_rows, not_utf8
from pneumo.errors import PneumoError, check_path
from pneumo.tasks import CLASSES, Task, get_task
from pneumo.utils.walk import child_dirs, image_files

__all__ = [
    "DATA_ACCEPTED",
    "Record",
    "Dataset",
    "discover",
    "parse_filename",
    "records_from_folder",
]

DATA_ACCEPTED = "a dataset folder (NORMAL/ and PNEUMONIA/, or train/ val/ test/ holding them) or a CSV manifest"
_SPLIT_NAMES = ("train", "val", "test")
# other names a manifest's split column may give them
_SPLIT_ALIASES = {"training": "train", "validation": "val", "valid": "val", "dev": "val", "testing": "test"}
_CLASS_DIRS = tuple(c.lower() for c in CLASSES)
_LISTED = 5  # problems named in one error message; the rest are counted

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

    def target(self, task: str | Task) -> int:
        """The class index for a task: binary 0/1, pathogen 0 normal / 1 bacteria / 2 virus."""
        return get_task(task).target(self.label, self.pathogen, self.path)


@dataclass
class Dataset:
    """Records per split as found on disk; a class-folder directory gives the single split 'all'."""

    root: Path
    splits: dict[str, list[Record]]
    layout: str  # "kaggle" | "folders" | "manifest"
    left_out: list[Path] = field(default_factory=list)  # files in its folders that are not images (a README, a CSV...)

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


def records_from_folder(folder: Path, root: Path | None = None, left_out: list[Path] | None = None) -> list[Record]:
    """Records of a folder with NORMAL/ and PNEUMONIA/ subfolders (any case); `root` is the
    dataset's top folder when `folder` is one of its splits (see `image_files`). A class folder
    inside another's (`NORMAL/PNEUMONIA/`) is an error: its films would take the outer folder's label.
    `left_out` collects the files met that are not images."""
    children = child_dirs(folder, distinct=_CLASS_DIRS)
    missing = [c for c in CLASSES if c.lower() not in children]
    if missing:
        raise PneumoError(
            f"{folder} has no {' or '.join(m + '/' for m in missing)} folder; expected class folders "
            f"NORMAL/ and PNEUMONIA/ (found: {', '.join(sorted(children)) or 'none'})"
        )
    records = []
    for label in CLASSES:
        class_folder = children[label.lower()]
        files = image_files(class_folder, root if root is not None else folder, left_out)
        if not files:
            raise PneumoError(
                f"class folder {class_folder} has no .jpeg/.jpg/.png images or DICOM files; put the {label} "
                "images in it, or point at a folder that has both classes"
            )
        inner = [
            p
            for p in files
            if any(part.lower() in _CLASS_DIRS and part.upper() != label for part in p.relative_to(class_folder).parts[:-1])
        ]
        if inner:
            raise PneumoError(
                f"{class_folder} holds another class's folder ({inner[0].relative_to(class_folder).parent}/, {len(inner)} images): "
                f"which label they have is not clear; move it beside {class_folder.name}/"
            )
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
            children = child_dirs(candidate, distinct=_SPLIT_NAMES)
            for split in _SPLIT_NAMES:
                if split in children and set(_CLASS_DIRS) <= set(child_dirs(children[split])):
                    return candidate
            nxt += sorted(children.values())
        level = nxt
    return None


def _listed(items: list[str], total: int) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" and {total - _LISTED} more" if total > _LISTED else "")


def _read_manifest(path: Path) -> dict[str, list[Record]]:
    """Records per split of a CSV manifest; every listed file must exist and be listed once."""
    splits: dict[str, list[Record]] = {}
    missing: list[str] = []
    first_line: dict[str, tuple[int, str]] = {}  # normalised path -> (line, label)
    repeats: list[str] = []
    blank: list[str] = []  # rows without a split, an error when others have one
    for lineno, row in manifest_rows(path, needs=("path", "label")):
        get = lambda key: row.get(key, "").strip()  # noqa: E731
        raw_label = get("label").lower()
        pathogen = _PATHOGEN_ALIASES.get(get("pathogen").lower(), get("pathogen").lower() or None)
        if raw_label in _PATHOGEN_ALIASES:
            pathogen, raw_label = _PATHOGEN_ALIASES[raw_label], "pneumonia"
        if raw_label not in ("normal", "pneumonia", "0", "1"):
            raise PneumoError(
                f"manifest {path} line {lineno}: label {get('label')!r} is not NORMAL or PNEUMONIA "
                "(0/1, bacteria and virus are accepted too)"
            )
        label = "PNEUMONIA" if raw_label in ("pneumonia", "1") else "NORMAL"
        if pathogen not in (None, "bacteria", "virus"):
            raise PneumoError(
                f"manifest {path} line {lineno}: pathogen {pathogen!r} is not bacteria or virus (leave it empty when unknown)"
            )
        if not get("path"):
            raise PneumoError(f"manifest {path} line {lineno}: empty path")
        file = Path(get("path"))
        if not file.is_absolute():  # `runs/x/../../data/a.jpeg` reads as `data/a.jpeg`
            file = Path(os.path.normpath(path.parent / file))
        key = os.path.normpath(file)
        if key in first_line:
            earlier, earlier_label = first_line[key]
            differs = " with another label" if earlier_label != label else ""
            repeats.append(f"line {lineno} repeats line {earlier}{differs} ({get('path')})")
            continue
        first_line[key] = (lineno, label)
        try:
            exists = file.is_file()
        except OSError:  # e.g. a name too long for the file system
            exists = False
        if not exists:
            missing.append(f"line {lineno}: {get('path')}")
            continue
        patient, parsed_pathogen = parse_filename(file.name)
        record = Record(
            file,
            label,
            (pathogen or parsed_pathogen) if label == "PNEUMONIA" else None,
            get("patient_id") or patient,
        )
        split = get("split").lower()
        split = _SPLIT_ALIASES.get(split, split)
        if not split:
            blank.append(f"line {lineno}")
        splits.setdefault(split or "all", []).append(record)
    if missing:
        raise PneumoError(
            f"manifest {path}: {len(missing)} of the listed files {'does' if len(missing) == 1 else 'do'} not exist "
            f"({_listed(missing, len(missing))}); "
            f"relative paths are read from the manifest's folder {path.parent}"
            + (
                "; some names are not UTF-8 text: if the manifest was saved in another encoding, save it as CSV UTF-8"
                if any(not_utf8(m) for m in missing)
                else ""
            )
        )
    if blank and len(splits) > 1:
        raise PneumoError(
            f"manifest {path}: {len(blank)} row{'s' if len(blank) != 1 else ''} with a blank split ({_listed(blank, len(blank))}) "
            f"among rows of {', '.join(k for k in splits if k != 'all')}: say which split each belongs to"
        )
    if repeats:
        raise PneumoError(
            f"manifest {path} has {len(repeats)} repeated row{'s' if len(repeats) != 1 else ''} "
            f"({_listed(repeats, len(repeats))}); keep one row per image"
        )
    if not splits:
        raise PneumoError(f"manifest {path} lists no images; add one row per image under its 'path,label' header")
    return splits


def discover(source: str | Path) -> Dataset:
    """Find every image under a dataset root, class folder or manifest.

    Example:
        >>> ds = discover("../shared/data")
        >>> sorted(ds.splits), ds.layout
        (['train'], 'kaggle')
    """
    check_path("source", source, what=DATA_ACCEPTED)
    root = Path(source).expanduser()
    if not root.exists():
        what = "is a symlink that leads nowhere (dangling, or a loop)" if root.is_symlink() else "does not exist"
        raise PneumoError(f"data path {root} {what}; give a dataset folder or a CSV manifest")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise PneumoError(f"{root} is a file but not a .csv manifest (columns path,label[,patient_id])")
        return Dataset(root, _read_manifest(root), "manifest")
    children = child_dirs(root, distinct=(*_CLASS_DIRS, *_SPLIT_NAMES))
    left_out: list[Path] = []
    if set(_CLASS_DIRS) <= set(children):
        beside = [n for n in _SPLIT_NAMES if n in children and set(_CLASS_DIRS) & set(child_dirs(children[n]))]
        if beside:
            raise PneumoError(
                f"{root} has class folders NORMAL/ and PNEUMONIA/ and a split folder {children[beside[0]].name}/ beside them: "
                "which to read is not clear; keep one layout (class folders, or train/ val/ test/ folders that hold them)"
            )
        return Dataset(root, {"all": records_from_folder(root, left_out=left_out)}, "folders", left_out)
    kaggle = _find_kaggle_root(root)
    present = [c for c in CLASSES if c.lower() in children]
    if kaggle is None and present:
        absent = next(c for c in CLASSES if c not in present)
        raise PneumoError(
            f"{root} has a {present[0]}/ folder but no {absent}/ folder: a dataset needs both class folders "
            "(or train/ val/ test/ split folders that hold them)"
        )
    if kaggle is None:
        raise PneumoError(
            f"no dataset found in {root}: expected train/ val/ test/ split folders, or NORMAL/ and "
            "PNEUMONIA/ class folders, or a CSV manifest"
        )
    splits = {}
    for name, folder in child_dirs(kaggle, distinct=_SPLIT_NAMES).items():
        if name in _SPLIT_NAMES:
            splits[name] = records_from_folder(folder, root=kaggle, left_out=left_out)
    return Dataset(kaggle, {name: splits[name] for name in _SPLIT_NAMES if name in splits}, "kaggle", left_out)
