import pyarrow as pa
import pytest

from features import predicate
from features.predicate import Bool, Compare, Const, Field, In, IsNull, Not
from parity.errors import DefinitionError

EVENTS = pa.table(
    {
        "event_type": ["click", "impression", "click", None, "click"],
        "device": ["mobile", "mobile", None, "desktop", "it's"],
        "cost": [1.5, None, 0.0, 2.0, -1.0],
        "n": pa.array([1, 2, 3, None, 5], pa.int64()),
        "flag": [True, False, None, True, False],
    }
)


def selected(text: str) -> list[int]:
    mask = predicate.evaluate(predicate.parse(text), EVENTS)
    return [i for i, chosen in enumerate(mask.to_pylist()) if chosen]


def test_the_views_filters_parse_to_their_trees():
    assert predicate.parse("event_type = 'click'") == Compare("=", Field("event_type"), Const("click"))
    assert predicate.parse("event_type = 'click' AND device = 'mobile'") == Bool(
        "AND",
        Compare("=", Field("event_type"), Const("click")),
        Compare("=", Field("device"), Const("mobile")),
    )


def test_precedence_is_sql_not_over_and_over_or():
    tree = predicate.parse("NOT a = 1 OR b = 2 AND c = 3")
    assert tree == Bool(
        "OR",
        Not(Compare("=", Field("a"), Const(1))),
        Bool("AND", Compare("=", Field("b"), Const(2)), Compare("=", Field("c"), Const(3))),
    )


def test_literals_keywords_and_quoted_fields():
    assert predicate.parse("`device` not in ('a', 'it''s', 2.5, -3, true)") == In(
        Field("device"), ("a", "it's", 2.5, -3, True), negated=True
    )
    assert predicate.parse("device IS NOT NULL") == IsNull(Field("device"), negated=True)
    assert predicate.fields(predicate.parse("(a = 1 OR b IS NULL) AND NOT c IN (1)")) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("1=1; DROP TABLE x", "not part of the filter grammar"),
        ("event_type != 'click'", "not part of the filter grammar; use <>"),
        ("event_type LIKE 'c%'", "was not expected here"),
        ("UPPER(event_type) = 'CLICK'", "was not expected here"),
        ("event_type = ", "a field or a literal was expected"),
        ("(event_type = 'click'", r"is where \) was expected"),
        ("'click' IS NULL", "needs an event field on its left"),
        ("   ", "where= is empty"),
    ],
)
def test_what_the_grammar_refuses_is_named(text, where):
    with pytest.raises(DefinitionError, match=where):
        predicate.parse(text)


def test_comparisons_select_only_true_rows():
    assert selected("event_type = 'click'") == [0, 2, 4]
    assert selected("event_type <> 'click'") == [1]  # NULL <> 'click' is NULL: not selected
    assert selected("cost > 0") == [0, 3]
    assert selected("cost <= 0.0") == [2, 4]
    assert selected("n >= 3") == [2, 4]
    assert selected("device = 'it''s'") == [4]


def test_three_valued_logic_matches_sql():
    # NULL AND FALSE is FALSE, NULL OR TRUE is TRUE, NOT NULL is NULL.
    assert selected("event_type = 'click' AND device = 'mobile'") == [0]
    assert selected("device = 'mobile' OR event_type = 'click'") == [0, 1, 2, 4]
    assert selected("NOT device = 'mobile'") == [3, 4]
    assert selected("flag") == [0, 3]
    assert selected("NOT flag") == [1, 4]


def test_null_tests_and_in_lists():
    assert selected("device IS NULL") == [2]
    assert selected("device IS NOT NULL AND event_type IS NOT NULL") == [0, 1, 4]
    assert selected("event_type IN ('click', 'view')") == [0, 2, 4]
    # NULL NOT IN (...) is NULL in SQL, so row 3 is not selected.
    assert selected("event_type NOT IN ('click')") == [1]


def test_constant_filters():
    assert selected("TRUE") == [0, 1, 2, 3, 4]
    assert selected("1 = 2") == []


def test_a_missing_field_or_a_type_clash_is_named():
    with pytest.raises(DefinitionError, match=r"names \['country'\]"):
        predicate.evaluate(predicate.parse("country = 'DE'"), EVENTS)
    with pytest.raises(DefinitionError, match="cannot be evaluated"):
        predicate.evaluate(predicate.parse("event_type > 3"), EVENTS)
