from hypothesis import given
from hypothesis import strategies as st

from nsml_etl.columnnames import (
    MAX_IDENTIFIER_LENGTH,
    allocate_columns,
    normalize,
    romanize,
    snake_case,
)


def test_normalize_lowercases_and_replaces():
    assert normalize("CUDA_VISIBLE_DEVICES") == "cuda_visible_devices"
    assert normalize("my.key-2 x") == "my_key_2_x"
    assert normalize("학습률") == "___"


def test_other_scripts_are_romanized_before_normalizing():
    assert romanize("lr") == "lr"
    assert romanize("학습률") == "HagSeubLyul"
    mapping = allocate_columns(["학습률", "배치 크기", "北京", "Ελληνικά", "café"], taken=[])
    assert mapping == {
        "학습률": "env_hagseublyul",
        "배치 크기": "env_baechi_keugi",
        "北京": "env_beijing",
        "Ελληνικά": "env_ellinika",
        "café": "env_cafe",
    }


def test_mixed_latin_and_hangul_keeps_both():
    assert allocate_columns(["lr_학습률", "BATCH크기"], []) == {
        "lr_학습률": "env_lr_hagseublyul",
        "BATCH크기": "env_batchkeugi",
    }


def test_keys_that_romanize_alike_get_distinct_columns():
    # The key already in normal form keeps the plain name; the others get a hash suffix.
    keys = ["hagseublyul", "학습률", "HagSeubLyul", "cafe", "café", "CAFÉ"]
    mapping = allocate_columns(keys, [])
    assert mapping["hagseublyul"] == "env_hagseublyul" and mapping["cafe"] == "env_cafe"
    assert len(set(mapping.values())) == len(keys)
    assert mapping["학습률"].startswith("env_hagseublyul_")
    assert mapping["café"].startswith("env_cafe_") and mapping["CAFÉ"].startswith("env_cafe_")
    assert allocate_columns(list(reversed(keys)), []) == mapping


def test_characters_without_a_spelling_become_underscores_as_before():
    # Private-use characters and lone surrogates romanize to nothing: the old rule applies.
    assert romanize("\ue000x\udc80") == "_x_"
    mapping = allocate_columns(["\ue000", "\ue001", "\ue000\ue001", ""], [])
    assert mapping["\ue000\ue001"] == "env___" and mapping[""] == "env_"
    assert mapping["\ue000"] == "env__"  # first in code-point order; the twin gets a hash
    assert mapping["\ue001"].startswith("env___") and len(mapping["\ue001"]) == 14
    assert len(set(mapping.values())) == 4
    assert all(normalize(name) == name for name in mapping.values())


def test_case_twins_get_distinct_columns_and_the_normal_one_keeps_the_plain_name():
    mapping = allocate_columns(["LR", "lr"], taken=[])
    assert mapping["lr"] == "env_lr"
    assert mapping["LR"].startswith("env_lr_") and mapping["LR"] != "env_lr"


def test_outcome_does_not_depend_on_arrival_order():
    keys = ["my.key", "my_key", "LR", "lr", "학습률", "학습"]
    assert allocate_columns(keys, []) == allocate_columns(list(reversed(keys)), [])


def test_long_keys_differing_at_the_end_are_shortened_with_a_hash():
    a, b = "k" * 79 + "1", "k" * 79 + "2"
    mapping = allocate_columns([a, b], [])
    assert mapping[a] != mapping[b]
    assert all(len(name) <= MAX_IDENTIFIER_LENGTH for name in mapping.values())


def test_taken_names_are_never_reused():
    assert allocate_columns(["lr"], taken=["env_lr"])["lr"] != "env_lr"


def test_a_suffixed_name_is_the_same_in_every_process_and_order():
    # Pinned: the suffix is a digest of the key, not Python's per-process salted hash(), so
    # another export (another process) that meets the same key picks the same name.
    assert allocate_columns(["a.b"], ["env_a_b"]) == {"a.b": "env_a_b_2e7336dc"}
    assert (
        allocate_columns(["a.b", "a_b"], [])
        == allocate_columns(["a_b", "a.b"], [])
        == {"a_b": "env_a_b", "a.b": "env_a_b_2e7336dc"}
    )


def test_field_names_use_snake_case():
    assert snake_case("runType") == "run_type"
    assert snake_case("createTime") == "create_time"
    assert snake_case("HTTPCode") == "http_code"
    assert snake_case("메모Text") == "memotext" and snake_case("gpu메모") == "gpumemo"
    mapping = allocate_columns(
        ["runType"], ["project_id"], prefix="", preferred={"runType": "run_type"}
    )
    assert mapping == {"runType": "run_type"}


@given(st.lists(st.text(max_size=90), max_size=30), st.lists(st.text(max_size=70), max_size=5))
def test_always_distinct_within_limits_and_outside_taken(keys, taken_keys):
    taken = [normalize(k) for k in taken_keys]
    mapping = allocate_columns(keys, taken)
    names = list(mapping.values())
    assert set(mapping) == set(keys)
    assert len(set(names)) == len(names)
    assert not set(names) & set(taken)
    for name in names:
        assert len(name) <= MAX_IDENTIFIER_LENGTH
        assert name.startswith("env_") and normalize(name) == name


@given(st.lists(st.text(max_size=40), min_size=1, max_size=10, unique=True))
def test_adding_keys_later_never_moves_earlier_ones(keys):
    first = allocate_columns(keys[:1], [])
    later = allocate_columns(keys[1:], list(first.values()))
    assert first.items() <= {**first, **later}.items()
    assert len(set(first.values()) | set(later.values())) == len(keys)
