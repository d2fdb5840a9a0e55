import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsml_etl.errors import BadLinesError, InputError
from nsml_etl.pairs import Pair, collect_pairs, write_pairs_file


def read_pairs(path, stdin=None):
    """All distinct pairs of a file, in file order, as an export reads them."""
    with collect_pairs(path, stdin) as pairs:
        return list(pairs)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_csv_with_bom_crlf_camel_case_and_extra_columns(tmp_path):
    path = write(tmp_path, "p.csv", "\ufeffnote,projectId,runName\r\nx,abc,1\r\ny,abc,2\r\n")
    assert read_pairs(path) == [Pair("abc", "1"), Pair("abc", "2")]


def test_values_kept_exactly_and_duplicates_fetched_once(tmp_path):
    path = write(tmp_path, "p.csv", "project_id,run_name\nabc, 7\nabc,007\nabc, 7\n\n")
    assert read_pairs(path) == [Pair("abc", " 7"), Pair("abc", "007")]


def test_jsonl_by_extension_with_numeric_run_names(tmp_path):
    lines = [{"projectId": "p", "runName": 3}, {"project_id": "p", "run_name": "4", "x": 1}]
    path = write(tmp_path, "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_pairs(path) == [Pair("p", "3"), Pair("p", "4")]


def test_stdin_is_sniffed():
    jsonl = io.BytesIO(b'{"projectId": "p", "runName": "1"}\n')
    csv_in = io.BytesIO(b"project_id,run_name\r\np,2\r\n")
    assert read_pairs("-", stdin=jsonl) == [Pair("p", "1")]
    assert read_pairs("-", stdin=csv_in) == [Pair("p", "2")]


def test_awkward_but_legal_names_are_kept(tmp_path):
    path = write(tmp_path, "p.csv", 'project_id,run_name\np,2/../x\np,%2F\np,a b\np,"x,y"\n')
    assert [p.run_name for p in read_pairs(path)] == ["2/../x", "%2F", "a b", "x,y"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "empty.csv: empty file"),
        ("header.csv", "project_id,run_name\n", "header.csv: no pairs found"),
        ("cols.csv", "project,run\np,1\n", "cols.csv:1: missing column project_id or projectId"),
        (
            "both.csv",
            "project_id,projectId,run_name\n",
            "both.csv:1: both project_id and projectId",
        ),
        ("short.csv", "project_id,run_name\np,1\np\n", "short.csv:3: missing value for run_name"),
        ("blank.csv", "project_id,run_name\np,1\n ,2\n", "blank.csv:3: project_id is empty"),
        ("emptyrun.csv", "project_id,run_name\r\np,\r\n", "emptyrun.csv:2: run_name is empty"),
        ("ctrl.csv", "project_id,run_name\np,a\x01b\n", "ctrl.csv:2: run_name 'a\\x01b' holds"),
        ("dots.csv", "project_id,run_name\np,..\n", "dots.csv:2: run_name '..' is a relative"),
        ("quote.csv", 'project_id,run_name\np,"1\n', "quote.csv:2: malformed CSV"),
        ("multi.csv", 'project_id,run_name\np,"1\n2"\np,\n', "multi.csv:2: run_name '1\\n2'"),
        (
            "bad.jsonl",
            '{"projectId":"p","runName":"1"}\n{"projectId":\n',
            "bad.jsonl:2: not valid JSON",
        ),
        ("list.jsonl", '["p", "1"]\n', "list.jsonl:1: expected a JSON object"),
        ("nokey.jsonl", '{"projectId":"p"}\n', "nokey.jsonl:1: missing column run_name"),
        ("null.jsonl", '{"projectId":"p","runName":null}\n', "null.jsonl:1: runName is null"),
        ("float.jsonl", '{"projectId":"p","runName":1.5}\n', "float.jsonl:1: runName must be"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        read_pairs(path)
    assert str(info.value).startswith(str(tmp_path / message.split(":")[0]))
    assert message.split(":", 1)[1] in str(info.value)


def test_binary_and_non_utf8_files(tmp_path):
    with pytest.raises(InputError, match=r"png.csv:1: not valid UTF-8 text \(a binary file"):
        read_pairs(write(tmp_path, "png.csv", b"\x89PNG\r\n\x1a\n\x00\x00"))
    with pytest.raises(InputError, match=r"nul.csv:2: NUL byte"):
        read_pairs(write(tmp_path, "nul.csv", b"project_id,run_name\np,\x00\x00\n"))
    with pytest.raises(InputError, match=r"latin.csv:2: not valid UTF-8"):
        read_pairs(write(tmp_path, "latin.csv", b"project_id,run_name\np,caf\xe9\n"))


def test_every_bad_line_is_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        "p.csv",
        b'project_id,run_name\np,1\np,..\n,2\np,ok\np\np,"a"b\np,caf\xe9\n\np,"1\n2"\np,3\n',
    )
    with pytest.raises(BadLinesError) as info:
        read_pairs(path)
    assert info.value.lines == [
        f"{path}:3: run_name '..' is a relative path segment, not a name",
        f"{path}:4: project_id is empty",
        f"{path}:6: missing value for run_name",
        f"{path}:7: malformed CSV: ',' expected after '\"'",
        f"{path}:8: not valid UTF-8 text (a binary file, or another encoding?)",
        f"{path}:10: run_name '1\\n2' holds control character '\\n'",
    ]
    assert info.value.more == 0
    assert str(info.value) == "\n  ".join(
        [f"{path}: 6 bad lines; fix them and run again:", *info.value.lines]
    )


def test_twenty_bad_lines_are_shown_then_how_many_more(tmp_path):
    rows = "".join(f"p,{i}\np,\n" for i in range(25))  # every other line bad
    path = write(
        tmp_path,
        "p.jsonl",
        "".join(json.dumps({"projectId": "p", "runName": r}) + "\n" for r in ["1", "", "2"] * 10),
    )
    with pytest.raises(BadLinesError) as info:
        read_pairs(path)
    assert info.value.lines == [f"{path}:{3 * i + 2}: runName is empty" for i in range(10)]
    path = write(tmp_path, "p.csv", "project_id,run_name\n" + rows)
    with pytest.raises(BadLinesError) as info:
        read_pairs(path)
    assert len(info.value.lines) == 20 and info.value.more == 5
    assert info.value.lines[0] == f"{path}:3: run_name is empty"
    assert info.value.lines[-1] == f"{path}:41: run_name is empty"
    assert str(info.value).startswith(f"{path}: 25 bad lines; fix them and run again:\n  ")
    assert str(info.value).endswith(f"\n  {path}:41: run_name is empty\n  ... and 5 more")


def test_what_stops_the_reading_is_reported_with_the_lines_before(tmp_path):
    # A binary tail: reading it line by line would only find more NUL bytes.
    path = write(tmp_path, "p.csv", b"project_id,run_name\np,\np,1\n" + b"\x00" * 100)
    with pytest.raises(BadLinesError) as info:
        read_pairs(path)
    assert info.value.lines == [
        f"{path}:2: run_name is empty",
        f"{path}:4: NUL byte: this looks like a binary file",
    ]
    # Before the header, a line that is not text stops the reading, alone as before.
    path = write(tmp_path, "q.csv", b"caf\xe9\nproject_id,run_name\np,\n")
    with pytest.raises(InputError) as single:
        read_pairs(path)
    assert (
        str(single.value) == f"{path}:1: not valid UTF-8 text (a binary file, or another encoding?)"
    )


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such pairs file"):
        read_pairs(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        read_pairs(tmp_path)


name_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
).filter(lambda s: s.strip() and s not in (".", ".."))


@given(st.lists(st.tuples(name_text, name_text), min_size=1, max_size=20))
def test_csv_round_trip_keeps_every_value_exactly(pairs):
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["project_id", "run_name"])
    writer.writerows(pairs)
    got = read_pairs("-", stdin=io.BytesIO(buffer.getvalue().encode("utf-8")))
    assert got == list(dict.fromkeys(Pair(*p) for p in pairs))


@given(st.lists(st.tuples(name_text, name_text), min_size=1, max_size=20))
def test_jsonl_round_trip_keeps_every_value_exactly(pairs):
    text = "".join(json.dumps({"projectId": p, "runName": r}) + "\n" for p, r in pairs)
    got = read_pairs("-", stdin=io.BytesIO(text.encode("utf-8")))
    assert got == list(dict.fromkeys(Pair(*p) for p in pairs))


def test_mixed_csv_quoting(tmp_path):
    path = write(
        tmp_path, "mixed.csv", '"project_id",run_name\r\n"p",1\np,"2"\n"p","3"\n"p ""q""","a,b"\n'
    )
    assert read_pairs(path) == [
        Pair("p", "1"),
        Pair("p", "2"),
        Pair("p", "3"),
        Pair('p "q"', "a,b"),
    ]


def test_many_pairs_spill_to_disk_keeping_order_and_uniqueness(tmp_path):
    from nsml_etl.pairs import collect_pairs

    rows = [f"p{i % 7},{i % 50}" for i in range(400)] + [f"q,{i}" for i in range(30)]
    path = write(tmp_path, "many.csv", "project_id,run_name\n" + "\n".join(rows) + "\n")
    expected = list(dict.fromkeys(Pair(*r.split(",")) for r in rows))
    with collect_pairs(path, spill_after=10) as spilled:
        assert spilled._db is not None  # really on disk
        assert len(spilled) == len(expected)
        assert list(spilled) == expected
    assert read_pairs(path) == expected  # the in-memory path agrees


def test_a_written_pairs_file_reads_back_with_its_extra_columns(tmp_path):
    path = tmp_path / "out.csv"
    pairs = [Pair("p", " 7"), Pair("p,q", 'say "hi"'), Pair("한국", "1")]
    assert (
        write_pairs_file(
            path, ((*p, None, f"x{i}") for i, p in enumerate(pairs)), ["status", "note"]
        )
        == 3
    )
    assert read_pairs(path) == pairs
    assert path.read_text(encoding="utf-8").splitlines()[:2] == [
        "project_id,run_name,status,note",
        "p, 7,,x0",
    ]


def test_a_pairs_file_whose_rows_fail_midway_leaves_the_old_file_whole(tmp_path):
    path = write(tmp_path, "out.csv", "project_id,run_name\nold,1\n")

    def rows():
        yield Pair("new", "1")
        raise InputError("the run list failed")

    with pytest.raises(InputError, match="the run list failed"):
        write_pairs_file(path, rows())
    assert read_pairs(path) == [Pair("old", "1")]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # nothing left aside


def test_an_unwritable_pairs_file_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="nowhere/out.csv: cannot write"):
        write_pairs_file(tmp_path / "nowhere" / "out.csv", [Pair("p", "1")])
