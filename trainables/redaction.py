"""Secrets out of URIs before they are printed or logged.

A weights URL or a tracking URI may carry a user and password (`https://user:token@host/...`) or
a signed query string (`...?X-Amz-Signature=...`). `redact_uri` keeps what tells a reader which
file it is (scheme, host, port, path) and drops the rest; `redact_values` does it to every string
in a config. The trials still get the URI as given: only what people and logs see is redacted.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "REDACTED"


def redact_uri(uri: str) -> str:
    """`uri` without user:password, query string and fragment; a string with no `scheme://` as is."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed authority (a bad port): keep the scheme alone
        return f"{uri.split('://', 1)[0]}://{REDACTED}"
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return uri  # nothing secret; and sqlite:///x keeps its empty authority
    netloc = (f"{REDACTED}@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host) + port
    query = REDACTED if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_values(values: Any) -> Any:
    """`values` (nested dicts, lists, strings) with every string's URIs redacted."""
    if isinstance(values, str):
        return " ".join(redact_uri(word) if "://" in word else word for word in values.split(" "))
    if isinstance(values, Mapping):
        return {key: redact_values(value) for key, value in values.items()}
    if isinstance(values, list | tuple):
        return type(values)(redact_values(value) for value in values)
    return values
