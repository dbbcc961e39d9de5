"""The record of the teacher a student was trained against: ``teacher.json`` beside the student.

A student trained against a teacher maps images into the teacher's vector space, and only
into that teacher's: its queries are comparable with vectors that teacher made (its bank, a
:mod:`teacher index <asymret.index>`) and with no other network's. The trainer writes the
record when it saves the student (:func:`write_teacher_record`); whoever pairs a student with
teacher vectors reads it (:func:`read_teacher_record`) and compares fingerprints
(:func:`~asymret.features.model_fingerprint` of the teacher's weights). A student trained
alone has no record.

The file::

    {"format": "asymret-teacher-record", "version": 1,
     "teacher": "<the spec it was loaded from>", "name": "<network name>",
     "fingerprint": "sha256:<hex>"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from asymret.errors import AsymretError
from asymret.features import Network, model_fingerprint, retrieval_net
from asymret.files import read_versioned_json, write_text_atomic

TEACHER_RECORD_FILE = "teacher.json"
RECORD_FORMAT = "asymret-teacher-record"
RECORD_VERSION = 1


@dataclass(frozen=True)
class TeacherRecord:
    """The teacher a student was trained against.

    Attributes:
        spec: what the teacher was loaded from (``models.teacher``: a path or a name).
        name: the teacher network's name, e.g. ``"resnet101-gem"``.
        fingerprint: ``"sha256:<hex>"`` of its weights (:func:`model_fingerprint`).
    """

    spec: str
    name: str
    fingerprint: str


def write_teacher_record(student_dir: str | Path, spec: str | Path, teacher: Network) -> Path:
    """Write ``student_dir/teacher.json`` (atomically) naming ``teacher``, loaded from ``spec``.

    Returns:
        The file written.
    """
    path = Path(student_dir) / TEACHER_RECORD_FILE
    record = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "teacher": str(spec),
        "name": retrieval_net(teacher).config.name,
        "fingerprint": model_fingerprint(teacher),
    }
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def read_teacher_record(student_dir: str | Path) -> TeacherRecord | None:
    """The teacher recorded beside a saved student, or ``None`` when there is no record (a
    student trained alone, a file or a name rather than a saved folder, or a student saved
    before asymret recorded teachers).

    Raises:
        AsymretError: naming ``teacher.json`` when it exists but cannot be read or is not a
            teacher record.
    """
    path = Path(student_dir) / TEACHER_RECORD_FILE
    if not Path(student_dir).is_dir() or not path.exists():
        return None
    data = read_versioned_json(path, RECORD_FORMAT, RECORD_VERSION,
                               contents="the teacher record", kind="teacher record",
                               label="teacher record")
    fields = {key: data.get(key) for key in ("teacher", "name", "fingerprint")}
    if not all(isinstance(value, str) and value for value in fields.values()):
        raise AsymretError(f"{path}: teacher record lacks 'teacher', 'name' or 'fingerprint'")
    return TeacherRecord(fields["teacher"], fields["name"], fields["fingerprint"])
