"""Which registry subjects each schema folder serves (schemas/subjects.toml)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from parity.errors import SchemaError
from schemas.avro import SCHEMA_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib

SUBJECTS_FILE = "subjects.toml"


@dataclass(frozen=True)
class SchemaFolder:
    """A folder of versioned .avsc files and the subjects it serves."""

    name: str
    subjects: tuple[str, ...]


def load(root: Path = SCHEMA_ROOT) -> list[SchemaFolder]:
    """Every mapped folder, in file order.

    Raises:
        SchemaError: the file is missing or malformed, names a folder that does not exist,
            or a folder holding .avsc files is not mapped.
    """
    path = root / SUBJECTS_FILE
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SchemaError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{path} is not valid TOML: {exc}") from exc
    folders: list[SchemaFolder] = []
    seen: dict[str, str] = {}
    for name, table in data.items():
        subjects = table.get("subjects") if isinstance(table, dict) else None
        if (
            not isinstance(subjects, list)
            or not subjects
            or not all(isinstance(s, str) and s for s in subjects)
        ):
            raise SchemaError(f'{path} [{name}]: set subjects = ["<topic>-value", ...] (a non-empty list).')
        if not (root / name).is_dir():
            raise SchemaError(f"{path} maps [{name}], but schemas/{name}/ does not exist.")
        for subject in subjects:
            if subject in seen:
                raise SchemaError(
                    f"{path}: subject {subject!r} is mapped to both [{seen[subject]}] and [{name}]."
                )
            seen[subject] = name
        folders.append(SchemaFolder(name, tuple(subjects)))
    mapped = {f.name for f in folders}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("v*.avsc"))):
        if folder.name not in mapped:
            raise SchemaError(
                f"schemas/{folder.name}/ holds schemas but {path.name} does not map it; "
                f'add [{folder.name}] subjects = ["<topic>-value"].'
            )
    return folders


def folder_of(subject_or_folder: str, root: Path = SCHEMA_ROOT) -> SchemaFolder:
    """The folder named so, or the folder serving that subject.

    Raises:
        SchemaError: neither a mapped folder nor a mapped subject.
    """
    folders = load(root)
    for folder in folders:
        if subject_or_folder == folder.name or subject_or_folder in folder.subjects:
            return folder
    known = sorted({f.name for f in folders} | {s for f in folders for s in f.subjects})
    raise SchemaError(
        f"{subject_or_folder!r} is neither a schema folder nor a mapped subject; known: {known}."
    )
