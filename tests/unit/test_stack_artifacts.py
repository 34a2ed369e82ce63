from pathlib import Path

import pytest

from parity.errors import StackError
from stack.artifacts import Coordinate, load, parse

GOOD = """
[flink]
jars = ["org.example:a-jar:1.0", "org.example:b:2.0"]
[kafka]
artifacts = ["org.apache.kafka:kafka_2.13:4.1.1", "org.apache.logging.log4j:log4j-core:2.24.3"]
[registry]
artifact = "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"
java = 21
[debian]
binaries = { redis-server = "redis-server", promtool = "prometheus", prometheus = "prometheus" }
"""


def test_repository_file_parses():
    arts = load()
    assert arts.flink_jars
    assert arts.kafka_version.startswith("4.")
    assert arts.registry.type == "tar.gz"
    assert "redis-server" in arts.debian


def test_parse_reads_every_section():
    arts = parse(GOOD, Path("x.toml"))
    assert [c.artifact for c in arts.flink_jars] == ["a-jar", "b"]
    assert arts.kafka_version == "4.1.1"
    assert arts.registry_java == 21
    assert arts.packages == ["prometheus", "redis-server"]


def test_coordinate_file_name_and_text():
    plain = Coordinate.parse("org.example:thing:1.2.3")
    assert plain.file_name == "thing-1.2.3.jar"
    assert str(plain) == "org.example:thing:1.2.3"
    tarball = Coordinate.parse("io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all")
    assert tarball.file_name == "apicurio-registry-app-3.3.3-all.tar.gz"
    assert str(tarball) == "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"


@pytest.mark.parametrize("text", ["a:b", "a::c", "a:b:c:d:e:f", ""])
def test_bad_coordinate_is_named(text):
    with pytest.raises(StackError, match="bad Maven coordinate"):
        Coordinate.parse(text)


def test_missing_section_is_named():
    with pytest.raises(StackError, match=r"missing table \[kafka\]"):
        parse(GOOD.replace("[kafka]", "[kafkax]"), Path("x.toml"))


def test_invalid_toml_names_the_file():
    with pytest.raises(StackError, match=r"x\.toml is not valid TOML"):
        parse("[flink", Path("x.toml"))


def test_empty_jar_list_is_rejected():
    with pytest.raises(StackError, match="jars must be a non-empty list"):
        parse(
            GOOD.replace('jars = ["org.example:a-jar:1.0", "org.example:b:2.0"]', "jars = []"), Path("x.toml")
        )
