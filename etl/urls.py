"""Database URLs as they may be shown: :func:`redact_url` masks what could be a secret.

Shared by the settings (``Settings.public_dict``) and the database module's messages, so that
neither has to import the other for it; it imports only SQLAlchemy's URL parser.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Query parameters that carry credentials (libpq's password, sslpassword, tokens, ...).
_SECRET_WORDS = "pass|pwd|secret|token|key"
_SECRET_QUERY_KEY = re.compile(_SECRET_WORDS, re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with its password and credential-like query values masked; never fails."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _redact_text(url)
    if parsed.password is not None and url.count("@") > 1:
        # An @ left unescaped in the password (or the user name): the parser ends the password
        # at the first @ and reads the rest of it as the host. Mask up to the last @ instead.
        return _redact_text(url)
    secret_keys = [k for k in parsed.query if _SECRET_QUERY_KEY.search(k)]
    if secret_keys:
        parsed = parsed.update_query_dict({k: "***" for k in secret_keys})
    return parsed.render_as_string(hide_password=True)


def _redact_text(url: str) -> str:
    """Masking without a parser, for what SQLAlchemy cannot read (or misreads): everything
    between ``user:`` and the last @ (more than the password, rather than less), and the
    values of credential-like parameters."""
    url = re.sub(r"(://[^:/]*:).*@", r"\1***@", url)
    return re.sub(rf"((?:{_SECRET_WORDS})[^=&]*=)[^&]*", r"\1***", url, flags=re.IGNORECASE)
