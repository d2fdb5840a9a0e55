import requests

from nsml_etl.nsml.auth import (
    ACCESS_KEY_HEADER,
    API_KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    MonotonicMillis,
    NcpSignatureV2,
    sign,
    string_to_sign,
)

ACCESS = "AKEXAMPLE00000000000"
SECRET = "SKEXAMPLEsecretKEY0000000000000000000000"
TIMESTAMP = "1700000000000"

# The vectors published in shared/nsml-api.md, checked there against NCP's own SDK.
VECTORS = [
    (
        "/nsml/v1/projects/2mdnduoena36ekcv4v7/runs/3",
        "W22ZWghbtWo0SoUixB662uHjZ2yIu1QwtEt0FzeCRYY=",
    ),
    ("/nsml/v1/projects/runs?page=2&pageSize=100", "zmPNwRU5kFNA2cJCCimF6qdeixar/DZy/uXipemhlzE="),
    ("/nsml/v1/projects?page=1&pageSize=10", "zjyes/1B3PGy+0fDMZ/kFaLOZKJIQwPivMYwk4z8M1g="),
]


def test_published_vectors():
    for uri, expected in VECTORS:
        assert sign(SECRET, string_to_sign("GET", uri, TIMESTAMP, ACCESS)) == expected


def test_string_to_sign_layout():
    assert string_to_sign("get", "/a?b=1", "5", "AK") == "GET /a?b=1\n5\nAK"


def _prepare(url: str, auth) -> requests.PreparedRequest:
    return requests.Request("GET", url, params=None, auth=auth).prepare()


def test_signer_signs_path_and_query_as_sent_including_base_prefix():
    auth = NcpSignatureV2(ACCESS, SECRET, clock_ms=lambda: int(TIMESTAMP))
    prepared = requests.Request(
        "GET",
        "https://nsml.apigw.ntruss.com/nsml/v1/projects/runs",
        params={"page": 2, "pageSize": 100},
        auth=auth,
    ).prepare()
    assert prepared.headers[SIGNATURE_HEADER] == VECTORS[1][1]
    assert prepared.headers[TIMESTAMP_HEADER] == TIMESTAMP
    assert prepared.headers[ACCESS_KEY_HEADER] == ACCESS
    assert API_KEY_HEADER not in prepared.headers


def test_signer_adds_api_key_only_when_given():
    auth = NcpSignatureV2(ACCESS, SECRET, api_key="gateway-key")
    assert _prepare("https://h/nsml/v1/projects", auth).headers[API_KEY_HEADER] == "gateway-key"


def test_each_signing_takes_a_fresh_timestamp_and_replaces_old_headers():
    ticks = iter([1000, 2000])
    auth = NcpSignatureV2(ACCESS, SECRET, clock_ms=lambda: next(ticks))
    prepared = _prepare("https://h/nsml/v1/projects", auth)
    first = prepared.headers[SIGNATURE_HEADER]
    auth(prepared)  # a retry signing the same request again
    assert prepared.headers[TIMESTAMP_HEADER] == "2000"
    assert prepared.headers[SIGNATURE_HEADER] != first


def test_monotonic_millis_never_repeats_within_one_millisecond():
    clock = MonotonicMillis(clock=lambda: 1700000000.0)
    stamps = [clock() for _ in range(5)]
    assert stamps == sorted(set(stamps)) and stamps[0] == 1700000000000


def test_repr_hides_the_secret():
    assert SECRET not in repr(NcpSignatureV2(ACCESS, SECRET, api_key="apikey-123"))
    assert "apikey-123" not in repr(NcpSignatureV2(ACCESS, SECRET, api_key="apikey-123"))
