"""The signature check against the worked example of the shared reference (§1.7) and its negatives."""

from __future__ import annotations

import json

import pytest

from ingest import signature

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
TS = 1767225600
BODY = (
    b'{"id":"5c1f0e9a7b3d2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6","apiVersion":"1.0",'
    b'"createdAt":"2026-01-01T00:00:00.412Z","type":"room.client.joined","data":{"meetingId":"91827364",'
    b'"roomName":"/acme-3f2b8c1d-9e4a-4b7c-8d2e-1a5f6b7c8d9e","roomSessionId":"0b6c2d4e-8f1a-4c3b-9d5e-7a2b4c6d8e0f",'
    b'"subdomain":"examplecorp","participantId":"c7e1a2b3-4d5e-4f60-8a9b-0c1d2e3f4a5b","displayName":"Ada Lovelace",'
    b'"metadata":"plan=enterprise","externalId":"user-00042","roleName":"visitor","numClients":2,'
    b'"numClientsByRoleName":{"host":1,"visitor":1},"isDialIn":false}}'
)
EXPECTED = "a88f268b36d61c7ed64fdd4d4396d21cd672b2d225a11b8b6d65662f12a4efad"
HEADER = f"t={TS},v1={EXPECTED}"


def test_worked_example_body_is_the_documented_566_bytes() -> None:
    assert len(BODY) == 566


def test_worked_example_digest() -> None:
    assert signature.compute(SECRET, str(TS), BODY) == EXPECTED
    assert signature.sign(BODY, SECRET, TS) == HEADER


def test_worked_example_verifies() -> None:
    signature.verify(HEADER, BODY, [SECRET], now=TS + 10)


def test_reserialised_json_does_not_verify() -> None:
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert signature.compute(SECRET, str(TS), reserialised) == (
        "36d2e83e44666a60e8bb737d892aff8f2a7cd9368ae9bd49ef8ca2833ec3c025"
    )
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(HEADER, reserialised, [SECRET], now=TS)
    assert err.value.reason == "no_match"


def test_appended_space_fails() -> None:
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(HEADER, BODY + b" ", [SECRET], now=TS)
    assert err.value.reason == "no_match"


@pytest.mark.parametrize("skew", [400, -400, 301, -301])
def test_timestamp_outside_tolerance_either_direction(skew: int) -> None:
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(HEADER, BODY, [SECRET], now=TS + skew, tolerance_s=300)
    assert err.value.reason == "timestamp"


@pytest.mark.parametrize("skew", [300, -300, 0])
def test_timestamp_inside_tolerance(skew: int) -> None:
    signature.verify(HEADER, BODY, [SECRET], now=TS + skew, tolerance_s=300)


def test_rotation_accepts_any_configured_secret() -> None:
    signature.verify(HEADER, BODY, ["old-secret-no-longer-used", SECRET], now=TS)


def test_several_v1_values_in_one_header() -> None:
    header = f"t={TS},v1={'0' * 64},v1={EXPECTED},x=ignored"
    signature.verify(header, BODY, [SECRET], now=TS)


def test_wrong_secret_fails() -> None:
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(HEADER, BODY, ["another-secret"], now=TS)
    assert err.value.reason == "no_match"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_header"),
        ("", "missing_header"),
        (f"v1={EXPECTED}", "malformed_header"),
        (f"t=abc,v1={EXPECTED}", "malformed_header"),
        (f"t={TS}", "malformed_header"),
        (f"t={TS},v1=xyz", "malformed_header"),
        (f"t={TS},v1={EXPECTED[:-1]}", "malformed_header"),
    ],
)
def test_malformed_headers(header: str | None, reason: str) -> None:
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(header, BODY, [SECRET], now=TS)
    assert err.value.reason == reason
    assert EXPECTED not in err.value.detail


def test_error_detail_never_reveals_the_expected_digest() -> None:
    with pytest.raises(signature.SignatureError) as err:
        signature.verify(f"t={TS},v1={'0' * 64}", BODY, [SECRET], now=TS)
    assert EXPECTED not in str(err.value)
