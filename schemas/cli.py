"""``parity schemas``: check, register and compare the versioned schemas under schemas/.

Every failure exits 1 with a one-line cause; ``--json`` output is for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from parity.config import RegistryConfig
from parity.errors import SchemaError, run_command
from schemas import avro, compat, subjects
from schemas.diff import diff
from schemas.registry import RegistryClient

# Tooling talks to the registry with a short timeout: an absent registry must not stall `make test`.
REGISTRY_TIMEOUT_S = 3.0
# What `register` sets on each subject: Confluent's BACKWARD (new readers read the previous version).
SUBJECT_LEVEL = "BACKWARD"

_EPILOG = """\
examples:
  parity schemas check                    every version vs every earlier one, and vs the registry if up
  parity schemas check --offline --json   no network; machine-readable
  parity schemas register --dry-run       what would be registered, in order
  parity schemas diff ad_event 1 2        fields added, removed, retyped or re-defaulted
  parity schemas diff ad-events-value v1 v2

Folders map to registry subjects in schemas/subjects.toml. Locally, each version
must read data written with every earlier version (BACKWARD, checked
transitively with Apache Avro's ReaderWriterCompatibilityChecker). When the
registry answers, it is asked too (POST /compatibility/subjects/<subject>/
versions/latest) about each version it does not hold yet. `register` sets
BACKWARD on each subject, then registers the versions oldest first; it is
idempotent. Registry URL: PARITY_REGISTRY_URL.
"""


def build_parser(prog: str = "parity schemas") -> argparse.ArgumentParser:
    """The argument parser of ``parity schemas``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Check, register and compare the versioned Avro schemas under schemas/.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="fail if any version is not BACKWARD compatible")
    check.add_argument("--offline", action="store_true", help="do not ask the registry")
    _common(check)

    register = commands.add_parser("register", help="set BACKWARD and register every version, in order")
    register.add_argument("--subject", help="only this subject (default: every mapped subject)")
    register.add_argument(
        "--dry-run", action="store_true", help="show what would be registered; change nothing"
    )
    _common(register)

    compare = commands.add_parser("diff", help="what changed between two versions")
    compare.add_argument("schema", help="a folder under schemas/ or a subject mapped to one")
    compare.add_argument("old", help="version, e.g. 1 or v1")
    compare.add_argument("new", help="version, e.g. 2 or v2")
    _common(compare)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--root", type=Path, default=avro.SCHEMA_ROOT, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    """Run ``parity schemas``; returns the exit status.

    Raises:
        SystemExit: on ``--help`` or unusable arguments (argparse's own exit).
    """
    args = build_parser().parse_args(argv)
    commands = {"check": _check, "register": _register, "diff": _diff}
    return run_command("parity schemas", lambda: commands[args.command](args, sys.stdout))


@dataclass
class _CheckReport:
    folders: list[dict[str, Any]] = field(default_factory=list)
    violations: list[compat.Violation] = field(default_factory=list)
    registry: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.violations,
            "level": compat.LEVEL,
            "schemas": self.folders,
            "registry": self.registry,
            "violations": [v.as_dict() for v in self.violations],
        }


def check(root: Path = avro.SCHEMA_ROOT, *, offline: bool = False) -> _CheckReport:
    """Check every folder (transitively, locally), the views' subjects, and the registry when reachable."""
    report = _CheckReport()
    folders = subjects.load(root)
    for folder in folders:
        versions = avro.versions(folder.name, root)
        report.folders.append(
            {
                "schema": folder.name,
                "versions": [v.version for v in versions],
                "subjects": list(folder.subjects),
            }
        )
        report.violations.extend(compat.check_versions(versions))
    if root == avro.SCHEMA_ROOT:
        report.violations.extend(_view_subjects(folders))
    if offline:
        report.registry = {"checked": False, "why": "--offline"}
        return report
    cfg = RegistryConfig()
    with RegistryClient(cfg, timeout_s=min(cfg.timeout_s, REGISTRY_TIMEOUT_S)) as client:
        if not client.reachable():
            report.registry = {"url": client.url, "checked": False, "why": "not reachable"}
            return report
        asked = 0
        for folder in folders:
            for version in avro.versions(folder.name, root):
                for subject in folder.subjects:
                    if client.lookup(subject, version.text) is not None:
                        continue  # already registered: the registry accepted it once
                    asked += 1
                    answer = client.check_latest(subject, version.text)
                    if not answer.compatible:
                        report.violations.append(_registry_violation(version, subject, answer.messages))
        report.registry = {"url": client.url, "checked": True, "asked": asked}
    return report


def _registry_violation(
    version: avro.SchemaVersion, subject: str, messages: tuple[str, ...]
) -> compat.Violation:
    return compat.Violation(
        schema=version.name,
        version=version.version,
        against=None,
        field="",
        rule=f"{SUBJECT_LEVEL} (registry)",
        message="; ".join(messages) or "the registry says it is not compatible with the latest version",
        location="/",
        source="registry",
        subject=subject,
    )


def _view_subjects(folders: list[subjects.SchemaFolder]) -> list[compat.Violation]:
    """Every feature view's source subject must be served by its schema folder."""
    from features.registry import load_views  # the views import schemas, not the other way round

    by_name = {f.name: f for f in folders}
    violations = []
    for view in load_views().values():
        folder = by_name.get(view.source.schema)
        if folder is None or view.source.subject not in folder.subjects:
            violations.append(
                compat.Violation(
                    schema=view.source.schema,
                    version=0,
                    against=None,
                    field="",
                    rule="unmapped_subject",
                    message=(
                        f"view {view.name!r} reads subject {view.source.subject!r}; add it to "
                        f"[{view.source.schema}] subjects in schemas/{subjects.SUBJECTS_FILE}"
                    ),
                    location="/",
                )
            )
    return violations


def _check(args: argparse.Namespace, out: TextIO) -> int:
    report = check(args.root, offline=args.offline)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2), file=out)
    else:
        for folder in report.folders:
            versions = ", ".join(f"v{n}" for n in folder["versions"])
            print(f"{folder['schema']}: {versions} -> {', '.join(folder['subjects'])}", file=out)
        registry = report.registry
        if registry.get("checked"):
            print(
                f"registry {registry['url']}: asked about {registry['asked']} unregistered version(s)",
                file=out,
            )
        else:
            print(f"registry: not asked ({registry.get('why')})", file=out)
        for violation in report.violations:
            print(f"INCOMPATIBLE {violation.line()}", file=out)
        if not report.violations:
            print(f"ok: every version reads every earlier one ({compat.LEVEL})", file=out)
    return 1 if report.violations else 0


def _register(args: argparse.Namespace, out: TextIO) -> int:
    report = check(args.root, offline=True)
    if report.violations:
        raise SchemaError(f"not registering: {report.violations[0].line()} (run `parity schemas check`)")
    folders = subjects.load(args.root)
    if args.subject:
        folders = [subjects.folder_of(args.subject, args.root)]
    cfg = RegistryConfig()
    results: list[dict[str, Any]] = []
    with RegistryClient(cfg, timeout_s=min(cfg.timeout_s, REGISTRY_TIMEOUT_S)) as client:
        for folder in folders:
            for subject in folder.subjects:
                if args.subject and subject != args.subject and args.subject != folder.name:
                    continue
                if not args.dry_run:
                    client.set_compatibility(subject, SUBJECT_LEVEL)
                for version in avro.versions(folder.name, args.root):
                    registered = client.lookup(subject, version.text)
                    entry: dict[str, Any] = {
                        "subject": subject,
                        "schema": folder.name,
                        "version": version.version,
                    }
                    if registered is not None:
                        entry.update(action="already registered", registry_version=registered)
                    elif args.dry_run:
                        entry.update(action="would register")
                    else:
                        entry.update(action="registered", id=client.register(subject, version.text))
                    results.append(entry)
    if args.json:
        print(
            json.dumps({"dry_run": args.dry_run, "level": SUBJECT_LEVEL, "results": results}, indent=2),
            file=out,
        )
    else:
        for entry in results:
            extra = f" (id {entry['id']})" if "id" in entry else ""
            print(
                f"{entry['subject']}: {entry['schema']} v{entry['version']} {entry['action']}{extra}",
                file=out,
            )
    return 0


def _version(text: str, versions: list[avro.SchemaVersion]) -> avro.SchemaVersion:
    number = text.lower().removeprefix("v")
    for version in versions:
        if number.isdigit() and version.version == int(number):
            return version
    raise SchemaError(f"no version {text!r}; known: {[f'v{v.version}' for v in versions]}.")


def _diff(args: argparse.Namespace, out: TextIO) -> int:
    folder = subjects.folder_of(args.schema, args.root)
    versions = avro.versions(folder.name, args.root)
    old, new = _version(args.old, versions), _version(args.new, versions)
    changes = diff(old, new)
    if args.json:
        document = {
            "schema": folder.name,
            "old": old.version,
            "new": new.version,
            "changes": [c.as_dict() for c in changes],
        }
        print(json.dumps(document, indent=2), file=out)
    else:
        print(f"{folder.name} v{old.version} -> v{new.version}", file=out)
        for change in changes:
            print(f"  {change.line()}", file=out)
        if not changes:
            print("  (no field changes)", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
