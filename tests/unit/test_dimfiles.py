"""Parsing customer and user files for `dims load`: formats, merging, and one problem per bad line."""

from __future__ import annotations

import orjson
import pytest

from enrich.dimensions import DimensionTable
from enrich.dimfiles import check_against, parse_customers, parse_users


def messages(problems: list[object]) -> list[str]:
    return [str(p) for p in problems]


def test_customers_csv_merges_rows_of_one_customer_and_keeps_extra_columns_as_attributes() -> None:
    text = (
        "customer_id,name,room_name_prefix,tier\n"
        "c-acme,Acme,acme-,gold\n"
        "\n"
        "c-acme,Acme,acme2-,\n"
        "c-labs,Acme Labs,acme-labs-,silver\n"
        "c-quiet,Quiet Co,,\n"
    )

    parsed = parse_customers(text, "customers.csv")

    assert parsed.problems == []
    acme = parsed.customers["c-acme"]
    assert acme.room_name_prefixes == ("acme-", "acme2-")
    assert acme.attributes == {"tier": "gold"}
    assert parsed.customers["c-labs"].room_name_prefixes == ("acme-labs-",)
    assert parsed.customers["c-quiet"].room_name_prefixes == ()
    assert parsed.prefix_lines == {"acme-": 2, "acme2-": 4, "acme-labs-": 5}


def test_customers_csv_reports_every_bad_line_with_its_number() -> None:
    text = (
        "customer_id,name,room_name_prefix\n"  # 1
        "c-acme,Acme,acme-\n"  # 2
        "c-evil,Evil,acme-\n"  # 3 same prefix as another customer
        "c-acme,Acme,acme-\n"  # 4 same prefix twice for one customer
        "c-big,Big,Big-Co-\n"  # 5 upper case
        ",Nameless,nameless-\n"  # 6 no id
        "c-x,X,x-,extra\n"  # 7 too many fields
        "c-acme,Other Name,acme3-\n"  # 8 name disagrees with line 2
        'c-q,"Quoted, Inc",q_\n'  # 9 invalid character
    )

    parsed = parse_customers(text, "c.csv")

    assert messages(parsed.problems) == [
        "c.csv:3: prefix 'acme-' is already given to customer 'c-acme' on line 2",
        "c.csv:4: prefix 'acme-' is listed twice for customer 'c-acme' (first on line 2)",
        "c.csv:5: room name prefix 'Big-Co-' must be 1-39 characters of a-z, 0-9 and '-' "
        "(Whereby lower-cases prefixes and removes spaces: use 'big-co-')",
        "c.csv:6: `customer_id` is required",
        "c.csv:7: has 4 fields, the header has 3",
        "c.csv:8: name differs from the name of customer 'c-acme' on line 2",
        "c.csv:9: room name prefix 'q_' must be 1-39 characters of a-z, 0-9 and '-'",
    ]


def test_csv_header_problems_and_empty_files() -> None:
    assert messages(parse_customers("id,name,prefix\nc,C,c-\n", "c.csv").problems) == [
        "c.csv:1: header lacks customer_id, room_name_prefix; expected customer_id,name,room_name_prefix "
        "(then any attribute columns)"
    ]
    assert messages(parse_customers("", "c.csv").problems) == [
        "c.csv: the file is empty; expected a header customer_id,name,room_name_prefix"
    ]
    assert messages(parse_customers("customer_id,name,room_name_prefix\n", "c.csv").problems) == [
        "c.csv: the file has no customer records"
    ]


def test_quoted_field_spanning_lines_reports_the_line_the_row_starts_on() -> None:
    text = 'customer_id,name,room_name_prefix\nc-1,"Two\nLines",ok-\nc-2,Bad,BAD\nc-3,"Three, ok",three-\n'

    parsed = parse_customers(text, "c.csv")

    assert [p.line for p in parsed.problems] == [2, 4]
    assert str(parsed.problems[0]) == "c.csv:2: column 2 (name) contains a control character (U+000A); remove it"
    assert parsed.customers["c-3"].name == "Three, ok"


CONTROL = "contains a control character"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer_id,name,room_name_prefix\nc-1,Acme\x1b[2J,acme-\n", f"c.csv:2: column 2 (name) {CONTROL} (U+001B)"),
        (
            'customer_id,name,room_name_prefix,tier\nc-1,Acme,acme-,"go\rld"\n',
            f"c.csv:2: column 4 (tier) {CONTROL} (U+000D)",
        ),
        ('customer_id,name,room_name_prefix\nc-1,"Acme\tInc",acme-\n', f"c.csv:2: column 2 (name) {CONTROL} (U+0009)"),
        (
            '{"customer_id":"c-1","name":"Acme\\u0007","room_name_prefixes":["acme-"]}\n',
            f"c.jsonl:1: `name` {CONTROL} (U+0007)",
        ),
    ],
    ids=["escape", "carriage-return-in-attribute", "tab", "jsonl-bell"],
)
def test_names_with_control_characters_are_refused_naming_file_line_and_column(text: str, message: str) -> None:
    parsed = parse_customers(text, message.split(":")[0])

    assert [str(p) for p in parsed.problems] == [message + ("; remove it" if "column" in message else "")]
    assert parsed.customers == {}


def test_user_names_with_control_characters_are_refused_too() -> None:
    parsed = parse_users("external_id,user_id,customer_id,name\next-1,u-1,c-1,Ada\u2028Lovelace\n", "u.csv")

    assert [str(p) for p in parsed.problems] == [
        "u.csv:2: column 4 (name) contains a control character (U+2028); remove it"
    ]


def test_customers_jsonl() -> None:
    lines = [
        orjson.dumps({"customer_id": "c-1", "name": "One", "room_name_prefixes": ["one-", "uno-"]}).decode(),
        "",
        orjson.dumps({"customer_id": "c-2", "name": "Two", "room_name_prefixes": ["one-"]}).decode(),
        "{not json",
        orjson.dumps({"customer_id": "c-1", "room_name_prefixes": []}).decode(),
        orjson.dumps({"customer_id": "c-3", "room_name_prefixes": ["three-"], "attributes": {"tier": 1}}).decode(),
    ]

    parsed = parse_customers("\n".join(lines) + "\n", "customers.jsonl")

    assert messages(parsed.problems) == [
        "customers.jsonl:3: prefix 'one-' is already given on line 1",
        "customers.jsonl:4: is not valid JSON",
        "customers.jsonl:5: customer 'c-1' is already defined on line 1",
    ]
    assert sorted(parsed.customers) == ["c-1", "c-3"]
    assert parsed.customers["c-3"].attributes == {"tier": "1"}


def test_format_is_sniffed_when_the_extension_says_nothing() -> None:
    jsonl = parse_customers('{"customer_id":"c","room_name_prefixes":["c-"]}\n', "customers.txt")
    csv = parse_customers("customer_id,name,room_name_prefix\nc,C,c-\n", "customers")

    assert list(jsonl.customers) == ["c"] and list(csv.customers) == ["c"]


def test_users_csv_with_optional_email_and_attributes() -> None:
    text = (
        "external_id,user_id,customer_id,name,email,team\n"
        "ext-ada,u-ada,c-labs,Ada,ada@example.com,blue\n"
        "ext-bob,,c-labs,Bob,,\n"
    )

    parsed = parse_users(text, "users.csv")

    assert parsed.problems == []
    ada, bob = parsed.users["ext-ada"], parsed.users["ext-bob"]
    assert (ada.user_id, ada.customer_id, ada.email, ada.attributes) == (
        "u-ada",
        "c-labs",
        "ada@example.com",
        {"team": "blue"},
    )
    assert (bob.user_id, bob.email, bob.attributes) == ("ext-bob", None, {})


def test_users_csv_reports_every_bad_line() -> None:
    text = (
        "external_id,user_id,customer_id,name\n"
        "ext-1,u1,c,One\n"
        "ext 2,u2,c,Two\n"
        "ext-1,u3,c,Again\n" + ("x" * 37) + ",u4,c,Long\n"
        "ext-5,u5,c\n"
    )

    parsed = parse_users(text, "u.csv")

    assert messages(parsed.problems) == [
        "u.csv:3: external_id 'ext 2' must be 1-36 characters of A-Z, a-z, 0-9, '_' and '-'",
        "u.csv:4: external_id 'ext-1' is already on line 2",
        f"u.csv:5: external_id '{'x' * 37}' must be 1-36 characters of A-Z, a-z, 0-9, '_' and '-'",
        "u.csv:6: has 3 fields, the header has 4",
    ]
    assert list(parsed.users) == ["ext-1"]


def test_users_jsonl() -> None:
    text = '{"external_id":"e1","user_id":"u1"}\n{"external_id":"e1"}\n[]\n'

    parsed = parse_users(text, "users.ndjson")

    assert messages(parsed.problems) == [
        "users.ndjson:2: external_id 'e1' is already on line 1",
        "users.ndjson:3: user record must be a JSON object",
    ]


def test_check_against_the_topic_finds_prefixes_owned_by_customers_not_in_the_file() -> None:
    table = DimensionTable()
    for offset, doc in enumerate(
        [
            {"customer_id": "c-old", "room_name_prefixes": ["acme-", "shared-"]},
            {"customer_id": "c-mover", "room_name_prefixes": ["moving-"]},
        ]
    ):
        table.apply(f"customer:{doc['customer_id']}".encode(), orjson.dumps(doc), offset)
    customers = parse_customers(
        "customer_id,name,room_name_prefix\n"
        "c-new,New,acme-\n"  # owned by c-old, which the file does not redefine: conflict
        "c-new,New,acme-labs-\n"  # extends c-old's prefix: allowed
        "c-taker,Taker,moving-\n"  # owned by c-mover, which the file redefines without it: allowed
        "c-mover,Mover,moved-\n",
        "c.csv",
    )
    users = parse_users(
        "external_id,user_id,customer_id,name\ne1,u1,c-old,A\ne2,u2,c-new,B\ne3,u3,c-ghost,C\ne4,u4,,D\n", "u.csv"
    )

    problems = check_against(table, customers, users)

    assert messages(problems) == [
        "c.csv:2: prefix 'acme-' already belongs to customer 'c-old' on the dimensions topic",
        "u.csv:4: customer_id 'c-ghost' is in neither the customers file nor the dimensions topic",
    ]
