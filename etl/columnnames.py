"""Column names for data-derived identifiers: env keys and undocumented top-level fields.

Rules, applied once per new key and then remembered in a mapping table, so a key keeps its
column forever (stable across exports, never renamed):

1. The preferred name is ``prefix + normalize(romanize(key))``: other scripts spelled in ASCII
   (``학습률`` -> ``hagseublyul``, by anyascii), then lower-case, every character outside
   ``[a-z0-9_]`` replaced by ``_``.
2. If that name is too long, or already taken (by a fixed column, another key's column, or
   another new key in the same batch), the name becomes a truncated prefix plus ``_`` and eight
   hex digits of the key's SHA-256, so distinct keys always get distinct columns.
3. In a batch, keys already in normal form (``lr``) choose before the ones that map onto them
   (``LR``), then in code-point order, so the outcome does not depend on arrival order.

Names never exceed :data:`MAX_IDENTIFIER_LENGTH`, the smallest limit among the databases we
support, so one key maps to the same column on SQLite, PostgreSQL and MySQL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

from anyascii import anyascii

# PostgreSQL truncates identifiers past 63 bytes, MySQL allows 64 characters; ours are ASCII.
MAX_IDENTIFIER_LENGTH = 63
ENV_PREFIX = "env_"
# The stem of the column of a key whose natural name is empty (a top-level field named "").
EMPTY_NAME_BASE = "field"
HASH_DIGITS = 8

_NOT_ALLOWED = re.compile(r"[^a-z0-9_]")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def normalize(key: str) -> str:
    """Lower-case, and replace anything outside ``[a-z0-9_]`` with ``_``."""
    return _NOT_ALLOWED.sub("_", key.lower())


def romanize(key: str) -> str:
    """Every non-ASCII character spelled in ASCII, so a column name can be read in a BI tool:
    ``학습률`` -> ``HagSeubLyul``, ``北京`` -> ``BeiJing``, ``café`` -> ``cafe`` (anyascii's
    tables, one character at a time). A character it has no spelling for (private use, a lone
    surrogate) becomes ``_``, as :func:`normalize` made of every non-ASCII one before."""
    if key.isascii():
        return key
    return "".join(char if char.isascii() else anyascii(char) or "_" for char in key)


def snake_case(field: str) -> str:
    """``runType`` -> ``run_type``; ``HTTPCode`` -> ``http_code``; then romanized
    (:func:`romanize`, after the case boundaries so a romanized word stays one) and
    :func:`normalize`d."""
    return normalize(romanize(_CAMEL_BOUNDARY.sub("_", field)))


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]


def _with_suffix(base: str, suffix: str) -> str:
    return base[: MAX_IDENTIFIER_LENGTH - len(suffix) - 1] + "_" + suffix


def _natural(key: str, prefix: str, preferred: Mapping[str, str]) -> str:
    return preferred.get(key) or prefix + normalize(romanize(key))


def allocation_order(
    keys: Iterable[str], prefix: str = ENV_PREFIX, preferred: Mapping[str, str] | None = None
) -> list[str]:
    """Rule 3's order: keys already in normal form first, then by code point (the order in
    which :func:`allocate_columns` gives names, and the cap on env columns takes keys)."""
    preferred = preferred or {}

    def already_normal(key: str) -> bool:
        return _natural(key, prefix, preferred) == (key if key in preferred else prefix + key)

    return sorted(set(keys), key=lambda k: (not already_normal(k), k))


def allocate_columns(
    new_keys: Iterable[str],
    taken: Iterable[str],
    prefix: str = ENV_PREFIX,
    preferred: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Choose a column for each new key, distinct from ``taken`` and from each other.

    ``preferred`` overrides rule 1 for a key (used for top-level fields, whose natural name is
    their snake_case form rather than ``prefix + normalize``).
    """
    used = {name.lower() for name in taken}
    preferred = preferred or {}
    result: dict[str, str] = {}

    for key in allocation_order(new_keys, prefix, preferred):
        # A field named "" has no natural name (and an empty identifier is refused everywhere).
        base = _natural(key, prefix, preferred) or EMPTY_NAME_BASE
        name = base
        if len(name) > MAX_IDENTIFIER_LENGTH or name in used or base is EMPTY_NAME_BASE:
            name = _with_suffix(base, key_hash(key))
            bump = 1
            while name in used:  # a hash collision: astronomically rare, still never a clash
                name = _with_suffix(base, f"{key_hash(key)}{bump}")
                bump += 1
        used.add(name)
        result[key] = name
    return result
