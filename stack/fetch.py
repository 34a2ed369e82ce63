"""Download and install what the stack runs; every step is skipped when already done."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from parity.errors import StackError
from stack.artifacts import Artifacts, Coordinate, load
from stack.config import StackConfig

# Names of the jars last put into pyflink/lib (kept in the cache, not in the
# venv), so a later fetch can remove the ones a version bump made stale.
MANIFEST = "installed.txt"
DONE = ".complete"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.parity</groupId>
  <artifactId>{name}</artifactId>
  <version>0</version>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(argv: Sequence[str], what: str, fix: str) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise StackError(
            f"fetching {what} failed ({' '.join(argv[:4])} ... exit {result.returncode}).\n"
            f"{output}\nlikely fix: {fix}"
        )


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) not found: apt-get install -y maven, then run `python -m stack fetch`")
    return mvn


MVN_FIX = "check access to Maven Central (proxy settings in ~/.m2/settings.xml) and retry"


def _complete(folder: Path, names: Iterable[str]) -> bool:
    return all((folder / n).is_file() and (folder / n).stat().st_size > 0 for n in names)


def fetch_jar(coord: Coordinate, folder: Path) -> Path:
    """One artifact alone (no transitive dependencies) into folder."""
    target = folder / coord.file_name
    if _complete(folder, [coord.file_name]):
        return target
    say(f"fetching {coord} ...")
    folder.mkdir(parents=True, exist_ok=True)
    _run(
        [_mvn(), "-q", "-B", "dependency:copy", f"-Dartifact={coord}", f"-DoutputDirectory={folder}"],
        str(coord),
        MVN_FIX,
    )
    if not _complete(folder, [coord.file_name]):
        raise StackError(
            f"fetching {coord} left no {target}; delete {folder} and run `python -m stack fetch`"
        )
    return target


def kafka_dir(cfg: StackConfig, arts: Artifacts) -> Path:
    return cfg.cache_dir / f"kafka-{arts.kafka_version}"


def fetch_kafka(cfg: StackConfig, arts: Artifacts) -> Path:
    """The broker and its runtime dependencies; a marker file records a finished copy."""
    folder = kafka_dir(cfg, arts)
    if (folder / DONE).is_file() and any(folder.glob("kafka_*.jar")):
        return folder
    say(f"fetching Kafka {arts.kafka_version} and its dependencies ...")
    return _resolve(cfg, "kafka-broker", arts.kafka, folder, f"Kafka {arts.kafka_version}")


def _resolve(cfg: StackConfig, name: str, coords: Sequence[Coordinate], folder: Path, what: str) -> Path:
    """coords and their runtime dependencies into folder, through a generated POM."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    deps = "\n".join(
        f"    <dependency><groupId>{c.group}</groupId><artifactId>{c.artifact}</artifactId>"
        f"<version>{c.version}</version>"
        + (f"<type>{c.type}</type><classifier>{c.classifier}</classifier>" if c.classifier else "")
        + "</dependency>"
        for c in coords
    )
    pom = cfg.cache_dir / f"{name}-pom" / "pom.xml"
    pom.parent.mkdir(parents=True, exist_ok=True)
    pom.write_text(POM.format(name=name, deps=deps))
    _run(
        [
            _mvn(),
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={folder}",
            "-DincludeScope=runtime",
        ],
        what,
        MVN_FIX,
    )
    jars = [p.name for p in folder.glob("*.jar")]
    if not _complete(folder, jars) or not all(_complete(folder, [c.file_name]) for c in coords):
        raise StackError(f"fetching {what} left an incomplete {folder}; run `python -m stack fetch` again")
    (folder / DONE).write_text("\n".join(sorted(jars)) + "\n")
    return folder


def s3_jar(cfg: StackConfig, arts: Artifacts) -> Path:
    """The S3 server's self-contained jar (the [s3] artifact), fetched when missing."""
    if arts.s3 is None:
        raise StackError("stack/artifacts.toml has no [s3] artifact: add one to run the s3 service")
    return fetch_jar(arts.s3, cfg.cache_dir / "downloads")


def iceberg_rest_dir(cfg: StackConfig, arts: Artifacts) -> Path:
    if not arts.iceberg_rest:
        raise StackError("stack/artifacts.toml has no [iceberg-rest] artifacts: add them to run iceberg-rest")
    return cfg.cache_dir / f"iceberg-rest-{arts.iceberg_rest[0].version}"


def fetch_iceberg_rest(cfg: StackConfig, arts: Artifacts) -> Path:
    """The REST catalog server's jars and their runtime dependencies."""
    folder = iceberg_rest_dir(cfg, arts)
    if (folder / DONE).is_file():
        return folder
    say("fetching the Iceberg REST catalog server and its dependencies ...")
    return _resolve(cfg, "iceberg-rest", arts.iceberg_rest, folder, "the Iceberg REST catalog server")


def registry_dir(cfg: StackConfig, arts: Artifacts) -> Path:
    return cfg.cache_dir / f"{arts.registry.artifact}-{arts.registry.version}"


def _has_launcher(folder: Path) -> bool:
    return (folder / "quarkus-run.jar").is_file() or any(folder.glob("*-runner.jar"))


def fetch_registry(cfg: StackConfig, arts: Artifacts) -> Path:
    """The Apicurio tarball, extracted next to it; extraction goes through a temp folder."""
    folder = registry_dir(cfg, arts)
    if _has_launcher(folder):
        return folder
    tarball = fetch_jar(arts.registry, cfg.cache_dir / "downloads")
    say(f"extracting {tarball.name} ...")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(
        ["tar", "-xzf", str(tarball), "-C", str(tmp)],
        tarball.name,
        f"the download may be truncated: delete {tarball} and run `python -m stack fetch`",
    )
    if not _has_launcher(tmp):
        raise StackError(f"{tarball} has no quarkus-run.jar; delete it and run `python -m stack fetch`")
    tmp.rename(folder)
    return folder


def pyflink_dir(cfg: StackConfig) -> Path:
    """pyflink's folder inside the job venv (FLINK_HOME of the standalone cluster)."""
    venv = cfg.job_venv_dir
    found = sorted(venv.glob("lib/python3*/site-packages/pyflink/bin/flink"))
    if not found:
        raise StackError(
            f"no PyFlink in the job venv {venv}: create it with `make .venv-job` "
            f"(python3 -m venv {cfg.job_venv} && {cfg.job_venv}/bin/pip install -e '.[job]'), "
            "or point PARITY_STACK_JOB_VENV at a venv with apache-flink"
        )
    return found[-1].parent.parent


def _stale(name: str, ours: set[str], coords: Sequence[Coordinate], previous: set[str]) -> bool:
    if name in ours:
        return False
    if name in previous:
        return True
    # Another version of one of our artifacts, e.g. left by a manual copy.
    return any(re.fullmatch(re.escape(c.artifact) + r"-\d[^/]*\.jar", name) for c in coords)


def install_flink_jars(cfg: StackConfig, arts: Artifacts) -> Path:
    lib = pyflink_dir(cfg) / "lib"
    cache = cfg.cache_dir / "flink-jars"
    jars = [fetch_jar(c, cache) for c in arts.flink_jars]
    ours = {j.name for j in jars}
    manifest = cache / MANIFEST
    previous = set(manifest.read_text().split()) if manifest.is_file() else set()
    for old in lib.glob("*.jar"):
        if _stale(old.name, ours, arts.flink_jars, previous):
            say(f"removing stale {old.name} from {lib}")
            old.unlink()
    for jar in jars:
        target = lib / jar.name
        if not target.is_file() or target.stat().st_size != jar.stat().st_size:
            say(f"installing {jar.name} into {lib}")
            shutil.copyfile(jar, target)
    manifest.write_text("\n".join(sorted(ours)) + "\n")
    # Some wheels ship the scripts without execute bits.
    for script in (lib.parent / "bin").iterdir():
        if script.suffix in ("", ".sh") and not os.access(script, os.X_OK):
            script.chmod(script.stat().st_mode | 0o755)
    return lib


def missing_packages(arts: Artifacts, also: Mapping[str, str] | None = None) -> list[str]:
    """Packages of ``arts.debian`` and ``also`` (binary -> package) whose binary is missing.

    Binaries of ``also`` are looked for in /usr/sbin too: daemons such as nginx live there,
    often off a user's PATH.
    """
    missing = {pkg for binary, pkg in arts.debian.items() if shutil.which(binary) is None}
    missing |= {
        pkg
        for binary, pkg in (also or {}).items()
        if shutil.which(binary) is None and not (Path("/usr/sbin") / binary).exists()
    }
    return sorted(missing)


def install_packages(arts: Artifacts, also: Mapping[str, str] | None = None) -> None:
    """apt-get install (as root) the packages of ``arts.debian`` and ``also`` whose binary is missing."""
    packages = missing_packages(arts, also)
    if not packages:
        return
    command = f"apt-get update && apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0:
        raise StackError(f"Debian packages missing: {', '.join(packages)}. Install them as root: {command}")
    say(f"fetching Debian packages {', '.join(packages)} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(argv)}` failed:\n{result.stderr.strip()[-2000:]}\n"
                f"likely fix: check the apt sources, then run: {command}"
            )


def fetch(cfg: StackConfig, only: Iterable[str] | None = None) -> None:
    """Everything the selected services need (all when only is None)."""
    wanted = set(only) if only is not None else {"kafka", "registry", "redis", "flink"}
    arts = load()
    # nginx only for the optional registry proxy: nobody else needs a web server installed.
    install_packages(arts, {"nginx": "nginx"} if "registry-tls" in wanted else None)
    if "kafka" in wanted:
        fetch_kafka(cfg, arts)
    if "registry" in wanted:
        fetch_registry(cfg, arts)
    if "flink" in wanted:
        install_flink_jars(cfg, arts)
    # Optional services, fetched only when asked for by name.
    if "s3" in wanted:
        s3_jar(cfg, arts)
    if "iceberg-rest" in wanted:
        fetch_iceberg_rest(cfg, arts)
