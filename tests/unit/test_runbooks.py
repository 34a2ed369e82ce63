"""The runbooks in docs/runbooks name only what exists, and every alert links to one.

Checked in the runbooks' code (inline and fenced): each ``parity <command>``, its
subcommand and its ``--flags`` against the command's own ``--help``; alert names
against the rules; ``feature_*`` and ``parity_view`` metric names against the code
that exports them; ``PARITY_*`` variables against the settings classes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
RULES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))

# Names a runbook may give ahead of the code (a command, an alert, a metric); none today.
PLANNED: frozenset[str] = frozenset()

PAGES = sorted(RUNBOOKS.glob("*.md"))
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)


def _code(text: str) -> list[str]:
    """Every fenced block's lines and every inline code span (wrapped lines joined)."""
    spans = [line for block in FENCE.findall(text) for line in block.splitlines()]
    prose = FENCE.sub("", text)
    spans += [re.sub(r"\s*\n\s*", " ", span) for span in re.findall(r"`([^`]+)`", prose)]
    return spans


CODE = {page.name: _code(page.read_text()) for page in PAGES}


def _alerts() -> dict[str, dict[str, str]]:
    """Every alert of every rules file, with its annotations."""
    assert {path.name for path in RULES} >= {"parity.rules.yml", "drift.rules.yml"}
    return {
        rule["alert"]: rule.get("annotations", {})
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


@functools.cache
def _help(*argv: str) -> str:
    """What ``parity <argv> --help`` prints."""
    from parity.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()


def _subcommands(help_text: str) -> set[str]:
    """The choices of a command's positional subcommand, from its usage line ({a,b,c}), if any."""
    usage = help_text.split("\n\n", 1)[0]
    found: set[str] = set()
    for before, choices in re.findall(r"(\S+)\s+\{([\w,-]+)\}", usage):
        # `[--source {iceberg,kafka}]` is an option's value, not a subcommand.
        if before.lstrip("[").startswith("-") and not before.endswith("]"):
            continue
        found |= set(choices.split(","))
    return found


def _commands() -> list[tuple[str, list[str]]]:
    """(page, tokens after `parity`) of every parity command line in the runbooks' code."""
    found = []
    for page, spans in CODE.items():
        for span in spans:
            for match in re.finditer(r"\bparity ([^`]*)", span):
                line = re.split(r" \| | && | # |;|\)", match.group(1))[0]
                tokens = [t.rstrip(".,:") for t in line.split()]
                if tokens and re.fullmatch(r"[a-z][\w|-]*", tokens[0]):
                    found.append((page, tokens))
    return found


def test_every_page_is_in_the_index():
    index = (RUNBOOKS / "README.md").read_text()
    assert len(PAGES) > 5
    missing = [p.name for p in PAGES if p.name != "README.md" and f"]({p.name})" not in index]
    assert not missing, f"runbooks not linked from docs/runbooks/README.md: {missing}"


def test_every_alert_has_a_runbook_url_to_an_existing_page():
    alerts = _alerts()
    assert len(alerts) >= 4
    for name, notes in alerts.items():
        url = notes.get("runbook_url")
        assert url, f"{name} has no runbook_url annotation"
        path, _, anchor = url.partition("#")
        assert path.startswith("docs/runbooks/") and (ROOT / path).is_file(), f"{name}: {url} does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.MULTILINE)
            slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{name}: {path} has no section #{anchor}"


def test_parity_commands_subcommands_and_flags_exist():
    from parity.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.choices and "job" in a.choices)
    commands = set(action.choices)
    checked = 0
    for page, tokens in _commands():
        command, rest = tokens[0], tokens[1:]
        if command in PLANNED and command not in commands:
            continue
        assert command in commands, f"{page}: `parity {command}` is not a parity command"
        path = [command]
        subcommands = _subcommands(_help(command))
        if subcommands and rest and re.fullmatch(r"[a-z][\w|-]*", rest[0]):
            for choice in rest[0].split("|"):
                assert choice in subcommands, f"{page}: `parity {command} {choice}` is not a subcommand"
            path.append(rest[0].split("|")[0])
        text = _help(*path)
        for flag in (t.split("=")[0] for t in rest if t.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{page}: `parity {' '.join(path)}` has no {flag}"
            )
        checked += 1
    assert checked > 30


def test_alerts_named_exist():
    alerts = set(_alerts()) | PLANNED
    for page, spans in CODE.items():
        for span in spans:
            # Alert names have three or more words; FeatureView or KafkaConfig are code.
            for name in re.findall(r"\b(?:Feature|Kafka)(?:[A-Z][a-z]+){2,}\b", span):
                assert name in alerts, f"{page}: alert {name} is in no deploy/prometheus/*.rules.yml"


def test_metrics_named_exist():
    serving = set(re.findall(r'"(feature_\w+)"', (ROOT / "serving" / "metrics.py").read_text()))
    # The job's metrics, from the Python writer and the JVM sink alike.
    writers = [ROOT / "sinks" / "flink_udf.py", *(ROOT / "jobs" / "jvm" / "src" / "main").rglob("*.java")]
    code = "".join(path.read_text() for path in writers)
    sink = set(re.findall(r'\.(?:counter|gauge|distribution)\(\s*"(\w+)"', code))
    for page, spans in CODE.items():
        for span in spans:
            for name in re.findall(r"\bfeature_(?:fetch|defaults|entities|requests|skew|drift)_\w+", span):
                base = re.sub(r"_(bucket|count|sum)$", "", name)
                assert name in serving or base in serving or name in PLANNED, f"{page}: no metric {name}"
            for name in re.findall(r"_parity_view_(\w+)", span):
                assert name in sink, f"{page}: the job exports no parity_view metric {name}"


def test_settings_named_exist():
    from parity.config import FlinkJobConfig, IcebergConfig, KafkaConfig, RedisConfig, RegistryConfig
    from producer.config import ProducerConfig
    from serving.config import ServingConfig
    from stack.config import StackConfig

    classes = (KafkaConfig, RegistryConfig, RedisConfig, IcebergConfig, FlinkJobConfig)
    classes += (ServingConfig, ProducerConfig, StackConfig)
    prefixes = {c.model_config["env_prefix"] for c in classes}
    names = {c.model_config["env_prefix"] + f.upper() for c in classes for f in c.model_fields}
    for page, spans in CODE.items():
        for span in spans:
            for name, star in re.findall(r"\b(PARITY_[A-Z0-9_]*[A-Z0-9_])(\*?)", span):
                known = name in prefixes if star else name in names
                assert known, f"{page}: {name}{star} is not a setting"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name}: link to {target} does not resolve"
