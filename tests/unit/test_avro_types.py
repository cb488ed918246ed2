"""Avro schemas derived from type hints, and values through fastavro and JSON.

The whole module uses string annotations (``from __future__ import annotations``), as many
users' task modules will; a few tests use real annotation objects for the other case.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Optional, Union

import fastavro
import pytest

from taskstream.avro.hints import AvroType, DecimalSpec, avro_type
from taskstream.errors import InvalidArguments, UnsupportedAnnotation
from taskstream.signature import derive_signature

NS = "app.tasks"


def through_fastavro(schema: Any, datum: Any) -> Any:
    """Write `datum` with fastavro's schemaless writer and read it back."""
    parsed = fastavro.parse_schema(schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, parsed)


def round_trip(t: AvroType, value: Any) -> Any:
    return t.from_avro(through_fastavro(t.schema, t.to_avro(value, "x")))


class Color(Enum):
    RED = "r"
    GREEN = "g"


class Priority(Enum):
    LOW = 1
    HIGH = 2


@dataclass
class Address:
    street: str
    zip: str | None = None


@dataclass
class User:
    name: str
    age: int
    home: Address
    work: Address | None = None


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Everything:
    n: int
    x: float
    s: str
    flag: bool
    raw: bytes
    when: datetime
    day: date
    id: uuid.UUID
    amount: Decimal
    color: Color
    tags: dict[str, int]
    scores: list[float]


EVERYTHING = Everything(
    n=-(2**63),
    x=2.5,
    s="héllo",
    flag=True,
    raw=b"\x00\xff",
    when=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    day=date(2024, 2, 29),
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    amount=Decimal("12.3400000000"),
    color=Color.GREEN,
    tags={"a": 1},
    scores=[1.0, 2.5],
)


# --- the mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (int, "long"),
        (float, "double"),
        (str, "string"),
        (bool, "boolean"),
        (bytes, "bytes"),
        (None, "null"),
        (type(None), "null"),
        (datetime, {"type": "long", "logicalType": "timestamp-micros"}),
        (date, {"type": "int", "logicalType": "date"}),
        (uuid.UUID, {"type": "string", "logicalType": "uuid"}),
        (Decimal, {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 10}),
        (Optional[int], ["null", "long"]),  # noqa: UP045 - the spelling under test
        (int | None, ["null", "long"]),
        (None | int, ["null", "long"]),
        (list[str], {"type": "array", "items": "string"}),
        (Sequence[str], {"type": "array", "items": "string"}),
        (tuple[str, ...], {"type": "array", "items": "string"}),
        (dict[str, int], {"type": "map", "values": "long"}),
        (Mapping[str, int], {"type": "map", "values": "long"}),
        (
            list[dict[str, bool | None]],
            {"type": "array", "items": {"type": "map", "values": ["null", "boolean"]}},
        ),
        (Color, {"type": "enum", "name": "Color", "namespace": NS, "symbols": ["RED", "GREEN"]}),
        (
            Annotated[Decimal, DecimalSpec(precision=12, scale=2)],
            {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        ),
        (
            Annotated[Decimal | None, DecimalSpec(precision=12, scale=2)],
            ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}],
        ),
    ],
)
def test_each_supported_annotation_maps_to_its_avro_schema(annotation: Any, schema: Any) -> None:
    assert avro_type(annotation, namespace=NS).schema == schema
    fastavro.parse_schema(schema)


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (int, 2**63 - 1),
        (int, -(2**63)),
        (float, 1.25),
        (str, "ünïcode"),
        (bool, False),
        (bytes, b"\x00\x01"),
        (None, None),
        (date, date(1969, 12, 31)),
        (uuid.UUID, uuid.uuid4()),
        (Color, Color.RED),
        (int | None, None),
        (int | None, 7),
        (uuid.UUID | None, uuid.UUID(int=5)),
        (datetime | None, datetime(2024, 1, 1, tzinfo=UTC)),
        (list[int], [1, 2, 3]),
        (tuple[int, ...], (1, 2)),
        (dict[str, list[Color]], {"a": [Color.GREEN], "b": []}),
        (User, User("ann", 41, Address("Main St 1"), Address("Elm St 2", "12345"))),
        (list[Address], [Address("a"), Address("b", "9")]),
        (Everything, EVERYTHING),
    ],
)
def test_values_round_trip_through_fastavro(annotation: Any, value: Any) -> None:
    assert round_trip(avro_type(annotation, namespace=NS), value) == value


def test_identity_conversions_return_the_same_object() -> None:
    text, items = "abc", [1, 2, 3]
    assert avro_type(str, namespace=NS).to_avro(text, "x") is text
    assert avro_type(list[int], namespace=NS).from_avro(items) is items


def test_an_int_rejects_bool_and_values_outside_64_bits() -> None:
    t = avro_type(int, namespace=NS, task="t")
    with pytest.raises(InvalidArguments, match="expected int, got bool True"):
        t.to_avro(True, "args.n")
    with pytest.raises(InvalidArguments, match="64-bit"):
        t.to_avro(2**63, "args.n")


def _scale(n: int) -> int:
    return n


@pytest.mark.parametrize(("text", "value"), [("3", 3), ("3.0", 3), ("1e3", 1000), ("-0.0", 0)])
def test_an_int_parameter_takes_an_integral_number_from_delay_and_from_json(
    text: str, value: int
) -> None:
    # One rule on both sides: JSON Schema's "integer" (the published OpenAPI) counts 1.0 in.
    sig = derive_signature(_scale, "t.scale")
    number = json.loads(text)
    encoded = sig.args_to_avro((number,), {})["n"]
    assert encoded == value and type(encoded) is int
    decoded = sig.args_from_json(json.loads(f'{{"n": {text}}}'))["n"]
    assert decoded == value and type(decoded) is int


@pytest.mark.parametrize("text", ["2.5", "1e-3", "1e300", "true"])
def test_an_int_parameter_refuses_other_numbers_from_delay_and_from_json(text: str) -> None:
    sig = derive_signature(_scale, "t.scale")
    with pytest.raises(InvalidArguments) as from_python:
        sig.args_to_avro((json.loads(text),), {})
    with pytest.raises(InvalidArguments) as from_json:
        sig.args_from_json(json.loads(f'{{"n": {text}}}'))
    assert from_python.value.path == from_json.value.path == "args.n"
    assert from_python.value.message == from_json.value.message


def test_a_float_accepts_an_int_and_encodes_it_as_a_float() -> None:
    encoded = avro_type(float, namespace=NS).to_avro(3, "x")
    assert encoded == 3.0
    assert type(encoded) is float


def test_a_tuple_annotation_decodes_to_a_tuple_and_a_list_accepts_a_tuple() -> None:
    assert round_trip(avro_type(tuple[str, ...], namespace=NS), ("a", "b")) == ("a", "b")
    assert round_trip(avro_type(list[int], namespace=NS), (1, 2)) == [1, 2]


def test_a_dataclass_becomes_a_record_named_after_the_class() -> None:
    assert avro_type(Address, namespace=NS).schema == {
        "type": "record",
        "name": "Address",
        "namespace": NS,
        "fields": [
            {"name": "street", "type": "string"},
            {"name": "zip", "type": ["null", "string"], "default": None},
        ],
    }


def test_a_dataclass_used_twice_is_defined_once_then_referenced_by_full_name() -> None:
    schema = avro_type(User, namespace=NS).schema
    home, work = schema["fields"][2], schema["fields"][3]
    assert home["type"]["name"] == "Address"
    assert work["type"] == ["null", "app.tasks.Address"]
    fastavro.parse_schema(schema)


def test_a_self_referencing_dataclass_round_trips() -> None:
    t = avro_type(Node, namespace=NS)
    assert t.schema["fields"][1]["type"] == {"type": "array", "items": "app.tasks.Node"}
    tree = Node("root", [Node("a", [Node("a1")]), Node("b")])
    assert round_trip(t, tree) == tree


def test_a_dataclass_defined_in_a_function_gets_a_valid_avro_name() -> None:
    @dataclass
    class Local:
        n: int

    schema = avro_type(Local, namespace=NS).schema
    assert (
        schema["name"]
        == "test_a_dataclass_defined_in_a_function_gets_a_valid_avro_name__locals__Local"
    )


# --- logical types: what fastavro does with them ------------------------------------------


def test_an_aware_datetime_comes_back_as_the_same_instant_in_utc() -> None:
    t = avro_type(datetime, namespace=NS)
    sent = datetime(2024, 5, 6, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    got = round_trip(t, sent)
    assert got == sent
    assert got.tzinfo == UTC
    assert got.hour == 7


def test_a_naive_datetime_is_rejected_because_it_needs_a_timezone() -> None:
    t = avro_type(datetime, namespace=NS, task="t")
    with pytest.raises(InvalidArguments, match="needs a timezone") as info:
        t.to_avro(datetime(2024, 1, 1), "args.when")
    assert info.value.path == "args.when"


def test_a_datetime_is_not_accepted_as_a_date() -> None:
    with pytest.raises(InvalidArguments, match="expected date, got datetime"):
        avro_type(date, namespace=NS).to_avro(datetime(2024, 1, 1, tzinfo=UTC), "x")


def test_a_decimal_comes_back_numerically_equal_at_the_schema_scale() -> None:
    got = round_trip(avro_type(Decimal, namespace=NS), Decimal("1.5"))
    assert got == Decimal("1.5")
    assert str(got) == "1.5000000000"


def test_a_decimal_with_38_digits_round_trips_exactly() -> None:
    big = Decimal("-1234567890123456789012345678.0123456789")
    assert round_trip(avro_type(Decimal, namespace=NS), big) == big


def test_a_decimal_spec_sets_precision_and_scale() -> None:
    t = avro_type(Annotated[Decimal, DecimalSpec(precision=6, scale=2)], namespace=NS)
    assert round_trip(t, Decimal("9999.99")) == Decimal("9999.99")
    assert round_trip(t, 12) == Decimal("12.00")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("1.005"), "more than 2 digits after the point"),
        (Decimal("10000"), "more than 4 digits before the point"),
        (Decimal("NaN"), "not a finite Decimal"),
        (Decimal("-Infinity"), "not a finite Decimal"),
        (1.5, "expected Decimal, got float 1.5"),
    ],
)
def test_a_decimal_that_does_not_fit_is_rejected_rather_than_rounded(
    value: Any, message: str
) -> None:
    t = avro_type(Annotated[Decimal, DecimalSpec(precision=6, scale=2)], namespace=NS)
    with pytest.raises(InvalidArguments, match=message):
        t.to_avro(value, "args.amount")


def test_a_uuid_round_trips_as_a_uuid_but_a_uuid_string_is_rejected() -> None:
    t = avro_type(uuid.UUID, namespace=NS)
    value = uuid.uuid4()
    assert t.to_avro(value, "x") is value  # fastavro writes the UUID object itself
    with pytest.raises(InvalidArguments, match="expected UUID, got str"):
        t.to_avro(str(value), "x")


def test_an_enum_is_written_as_its_member_name_and_read_back_as_the_member() -> None:
    t = avro_type(Priority, namespace=NS)
    assert t.to_avro(Priority.HIGH, "x") == "HIGH"
    assert t.from_avro(through_fastavro(t.schema, "HIGH")) is Priority.HIGH
    with pytest.raises(InvalidArguments, match="expected Priority, got int 2"):
        t.to_avro(2, "x")


# --- what cannot be mapped -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        (Any, "Any has no Avro schema"),
        (Union[int, str], "only X | None unions"),  # noqa: UP007 - the spelling under test
        (int | str | None, "only X | None unions"),
        (dict[int, str], "map keys are strings"),
        (list, "name the item types"),
        (dict, "name the item types"),
        (Sequence, "name the item types"),
        (tuple[int, str], "only tuple"),
        (set[int], "no Avro mapping"),
        (object, "no Avro mapping"),
        (Annotated[int, DecimalSpec()], "DecimalSpec applies to Decimal only"),
        (Annotated[Decimal, DecimalSpec(precision=2, scale=3)], "scale <= precision"),
        (Enum("Weird", ["ok", "not_ok", "αβ"]), "enum symbols must be Avro names"),
    ],
)
def test_annotations_without_an_avro_mapping_are_refused_with_a_reason(
    annotation: Any, reason: str
) -> None:
    with pytest.raises(UnsupportedAnnotation, match=reason) as info:
        avro_type(annotation, namespace=NS, task="app.tasks.t", parameter="p")
    assert (info.value.task, info.value.parameter) == ("app.tasks.t", "p")


def test_an_unsupported_field_inside_a_dataclass_names_the_field() -> None:
    @dataclass
    class Bad:
        ok: int
        anything: Any

    with pytest.raises(UnsupportedAnnotation, match=r"Bad\.anything: Any has no Avro schema"):
        avro_type(Bad, namespace=NS)


def test_two_different_classes_with_one_name_in_a_schema_are_refused() -> None:
    def make() -> type:
        @dataclass
        class Twin:
            n: int

        return Twin

    first, second = make(), make()

    @dataclass
    class Pair:
        a: first  # type: ignore[valid-type]
        b: second  # type: ignore[valid-type]

    Pair.__annotations__ = {"a": first, "b": second}
    with pytest.raises(UnsupportedAnnotation, match="also named"):
        avro_type(Pair, namespace=NS)


# --- task signatures ----------------------------------------------------------------------


def send_email(to: str, subject: str, retries: int = 3, cc: list[str] | None = None) -> bool:
    return True


def register(user: User, items: list[int], tags: dict[str, str], color: Color = Color.RED) -> User:
    return user


def test_the_schemas_of_a_small_task_are_exactly_these() -> None:
    sig = derive_signature(send_email, "app.tasks.send_email")
    assert sig.task == "app.tasks.send_email"
    assert sig.parameters == ("to", "subject", "retries", "cc")
    assert sig.args_schema == {
        "type": "record",
        "name": "send_email_args",
        "namespace": "app.tasks",
        "fields": [
            {"name": "to", "type": "string"},
            {"name": "subject", "type": "string"},
            {"name": "retries", "type": "long", "default": 3},
            {"name": "cc", "type": ["null", {"type": "array", "items": "string"}], "default": None},
        ],
    }
    assert sig.result_schema == "boolean"
    fastavro.parse_schema(sig.args_schema)


def test_a_task_name_without_dots_uses_the_taskstream_namespace_and_names_are_sanitized() -> None:
    assert derive_signature(send_email, "send")
    schema = derive_signature(send_email, "send").args_schema
    assert (schema["namespace"], schema["name"]) == ("taskstream.tasks", "send_args")
    schema = derive_signature(send_email, "my-app.v2.send-email").args_schema
    assert (schema["namespace"], schema["name"]) == ("my_app.v2", "send_email_args")


def test_avro_defaults_are_given_only_where_avro_can_express_the_python_default() -> None:
    def task(
        a: float = 1,
        b: bool = False,
        c: str = "x",
        d: int | None = None,
        e: int | None = 5,
        f: Color = Color.RED,
        g: list[int] = [],  # noqa: B006 - never mutated
    ) -> None: ...

    fields = derive_signature(task, "t").args_schema["fields"]
    assert {f["name"]: f["default"] for f in fields if "default" in f} == {
        "a": 1.0,
        "b": False,
        "c": "x",
        "d": None,
    }
    fastavro.parse_schema(derive_signature(task, "t").args_schema)


def test_args_round_trip_through_fastavro_with_defaults_applied() -> None:
    sig = derive_signature(register, "app.tasks.register")
    user = User("ann", 41, Address("Main St 1"))
    datum = sig.args_to_avro((user, [1, 2]), {"tags": {"k": "v"}})
    assert datum["color"] == "RED"
    kwargs = sig.args_from_avro(through_fastavro(sig.args_schema, datum))
    assert kwargs == {"user": user, "items": [1, 2], "tags": {"k": "v"}, "color": Color.RED}
    assert register(**kwargs) == user


def test_a_result_round_trips_through_its_own_standalone_schema() -> None:
    sig = derive_signature(register, "app.tasks.register")
    user = User("bob", 7, Address("a"), Address("b"))
    assert sig.result_schema["name"] == "User"  # defined here too: it is parsed on its own
    datum = through_fastavro(sig.result_schema, sig.result_to_avro(user))
    assert sig.result_from_avro(datum) == user


def test_a_task_returning_none_has_a_null_result() -> None:
    def fire(n: int) -> None: ...

    sig = derive_signature(fire, "fire")
    assert sig.result_schema == "null"
    assert sig.result_to_avro(None) is None
    with pytest.raises(InvalidArguments, match="expected None, got int 1"):
        sig.result_to_avro(1)


def test_positional_only_and_keyword_only_parameters_are_fine() -> None:
    def task(a: int, /, b: int, *, c: int = 0) -> int:
        return a + b + c

    sig = derive_signature(task, "t")
    assert sig.args_to_avro((1, 2), {"c": 3}) == {"a": 1, "b": 2, "c": 3}
    assert sig.args_to_avro((), {"a": 1, "b": 2}) == {"a": 1, "b": 2, "c": 0}
    assert sig.args_from_avro({"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3}


def test_real_annotation_objects_work_as_well_as_strings() -> None:
    def task(when, items):  # type: ignore[no-untyped-def]
        return None

    task.__annotations__ = {"when": datetime, "items": list[Address], "return": int | None}
    sig = derive_signature(task, "app.t")
    assert sig.args_schema["fields"][1]["type"]["items"]["name"] == "Address"
    assert sig.result_schema == ["null", "long"]


@pytest.mark.parametrize(
    ("source", "parameter", "reason"),
    [
        ("def f(x) -> int: ...", "x", "annotate it"),
        ("def f(x: int): ...", "return", "use -> None for no result"),
        ("def f(*xs: int) -> None: ...", "xs", "no schema"),
        ("def f(**kw: int) -> None: ...", "kw", "no schema"),
        ("def f(x: Any) -> None: ...", "x", "Any has no Avro schema"),
        ("def f(x: int = 'a') -> None: ...", "x", "the default does not fit"),
        ("def f(x: int = None) -> None: ...", "x", "the default does not fit"),
        ("def f(x: int) -> Any: ...", "return", "Any has no Avro schema"),
        ("def f(x: int, y: list[Missing]) -> None: ...", "y", "name 'Missing' is not defined"),
    ],
)
def test_an_unmappable_signature_is_refused_naming_task_and_parameter(
    source: str, parameter: str, reason: str
) -> None:
    namespace: dict[str, Any] = {"Any": Any}
    exec(compile("from __future__ import annotations\n" + source, "<task>", "exec"), namespace)
    with pytest.raises(UnsupportedAnnotation, match=reason) as info:
        derive_signature(namespace["f"], "app.tasks.f")
    assert (info.value.task, info.value.parameter) == ("app.tasks.f", parameter)


# --- invalid arguments name the field -----------------------------------------------------


def user(age: Any = 1, street: Any = "s") -> User:
    """A User that may hold wrong types, as a caller's bug would."""
    return User("a", age, Address(street))


@pytest.mark.parametrize(
    ("args", "kwargs", "path", "message"),
    [
        ((user(age="x"), [], {}), {}, "args.user.age", "expected int, got str 'x'"),
        ((user(street=5), [], {}), {}, "args.user.home.street", "expected str, got int 5"),
        ((user(), [0, 1, 2, "3"], {}), {}, "args.items[3]", "expected int, got str '3'"),
        ((user(), [], {"x": 1}), {}, 'args.tags["x"]', "expected str, got int 1"),
        ((user(), [], {1: "x"}), {}, "args.tags", "expected str keys, got int 1"),
        ((user(), (), {}, "RED"), {}, "args.color", "expected Color, got str 'RED'"),
        (("ann", [], {}), {}, "args.user", "expected User, got str 'ann'"),
        ((user(), None, {}), {}, "args.items", "expected list, got NoneType None"),
        ((), {"items": [], "tags": {}}, "args.user", "missing required argument"),
        ((None, [], {}), {"nope": 1}, "args.nope", "unexpected argument"),
        ((None, [], {}, Color.RED, 5), {}, "args", "too many positional arguments"),
    ],
)
def test_invalid_arguments_name_the_offending_field(
    args: tuple[Any, ...], kwargs: dict[str, Any], path: str, message: str
) -> None:
    sig = derive_signature(register, "app.tasks.register")
    with pytest.raises(InvalidArguments, match=message) as info:
        sig.args_to_avro(args, kwargs)
    assert (info.value.task, info.value.path) == ("app.tasks.register", path)


def test_omitted_trailing_arguments_take_their_defaults() -> None:
    sig = derive_signature(send_email, "app.tasks.send_email")
    expected = {"to": "a@b", "subject": "hi", "retries": 3, "cc": None}
    assert sig.args_to_avro(("a@b", "hi"), {}) == expected
    assert sig.args_to_avro(("a@b",), {"subject": "hi"}) == expected
    assert sig.args_to_avro((), {"to": "a@b", "subject": "hi", "cc": ["c@d"]})["cc"] == ["c@d"]


def test_an_invalid_result_is_reported_at_result() -> None:
    sig = derive_signature(register, "app.tasks.register")
    with pytest.raises(InvalidArguments) as info:
        sig.result_to_avro(User("a", 1, Address("s", zip=12345)))  # type: ignore[arg-type]
    assert info.value.path == "result.home.zip"


# --- JSON, for the CLI and the HTTP API ----------------------------------------------------


def everything_task(e: Everything, p: Priority, when: datetime | None = None) -> Everything:
    return e


EVERYTHING_JSON = {
    "n": -(2**63),
    "x": 2.5,
    "s": "héllo",
    "flag": True,
    "raw": "AP8=",
    "when": "2024-05-06T07:08:09.123456+00:00",
    "day": "2024-02-29",
    "id": "12345678-1234-5678-1234-567812345678",
    "amount": "12.3400000000",
    "color": "GREEN",
    "tags": {"a": 1},
    "scores": [1.0, 2.5],
}


def test_json_arguments_become_python_values() -> None:
    sig = derive_signature(everything_task, "app.tasks.everything")
    kwargs = sig.args_from_json(json.loads(json.dumps({"e": EVERYTHING_JSON, "p": "HIGH"})))
    assert kwargs == {"e": EVERYTHING, "p": Priority.HIGH}


def test_a_result_becomes_json_with_the_inverse_conventions() -> None:
    sig = derive_signature(everything_task, "app.tasks.everything")
    assert sig.result_to_json(EVERYTHING) == EVERYTHING_JSON
    json.dumps(sig.result_to_json(EVERYTHING))


def test_json_accepts_lenient_spellings() -> None:
    sig = derive_signature(everything_task, "app.tasks.everything")
    e = dict(EVERYTHING_JSON, amount=12.34, when="2024-05-06T09:08:09.123456+02:00")
    kwargs = sig.args_from_json({"e": e, "p": "HIGH", "when": "2024-01-01T00:00:00Z"})
    assert kwargs["e"] == EVERYTHING
    assert kwargs["when"] == datetime(2024, 1, 1, tzinfo=UTC)


def test_json_dataclass_fields_with_defaults_may_be_left_out() -> None:
    sig = derive_signature(register, "app.tasks.register")
    obj = {"user": {"name": "a", "age": 1, "home": {"street": "s"}}, "items": [], "tags": {}}
    assert sig.args_from_json(obj)["user"] == User("a", 1, Address("s"))


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"p": None}, "args", "expected a JSON object"),
        ({"e": dict(EVERYTHING_JSON, raw="not base64!")}, "args.e.raw", "base64"),
        ({"e": dict(EVERYTHING_JSON, when="2024-01-01T00:00:00")}, "args.e.when", "timezone"),
        ({"e": dict(EVERYTHING_JSON, when="yesterday")}, "args.e.when", "ISO-8601"),
        ({"e": dict(EVERYTHING_JSON, id="x")}, "args.e.id", "a UUID string"),
        ({"e": dict(EVERYTHING_JSON, amount="1.00000000001")}, "args.e.amount", "after the point"),
        ({"e": dict(EVERYTHING_JSON, amount="lots")}, "args.e.amount", "a decimal string"),
        ({"e": dict(EVERYTHING_JSON, scores=[1, "2"])}, "args.e.scores[1]", "expected float"),
        ({"e": dict(EVERYTHING_JSON, tags={"a": True})}, 'args.e.tags["a"]', "expected int"),
        ({"e": dict(EVERYTHING_JSON, extra=1)}, "args.e.extra", "unknown field"),
        ({"p": "MEDIUM"}, "args.p", "one of LOW, HIGH"),
        ({"p": 2}, "args.p", "one of LOW, HIGH"),  # by name only, as over HTTP
        ({"q": 1}, "args.q", "unknown field"),
        ({"p": "LOW", "e": {"n": 1}}, "args.e.x", "missing required field of Everything"),
    ],
)
def test_invalid_json_arguments_name_the_offending_field(
    change: dict[str, Any], path: str, message: str
) -> None:
    sig = derive_signature(everything_task, "app.tasks.everything")
    obj: Any = {"e": EVERYTHING_JSON, "p": "LOW", **change}
    if obj["p"] is None:
        obj = ["not", "an", "object"]
    with pytest.raises(InvalidArguments, match=message) as info:
        sig.args_from_json(obj)
    assert info.value.path == path


def test_a_missing_required_json_argument_is_named() -> None:
    sig = derive_signature(everything_task, "app.tasks.everything")
    with pytest.raises(InvalidArguments, match="missing required") as info:
        sig.args_from_json({"e": EVERYTHING_JSON})
    assert info.value.path == "args.p"
