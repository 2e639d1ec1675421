"""The ``Content-Disposition`` header of a download, for any file name (RFC 6266)."""

from __future__ import annotations

import re
import urllib.parse

#: What the plain ``filename`` keeps as it is: printable ASCII but the quote and the
#: backslash (which would end or escape the quoted string), ``%`` (which some
#: browsers decode) and ``;`` (where naive parsers split).
_UNSAFE_ASCII = re.compile(r'[^\x20-\x7e]|["\\%;]')


def attachment(name: str) -> str:
    """``attachment`` with ``name`` twice: as ``filename*`` in UTF-8, percent-encoded
    (RFC 8187), exact, and as a plain ``filename`` with unsafe characters replaced by
    ``_`` for clients that do not read the first."""
    fallback = _UNSAFE_ASCII.sub("_", name) or "download"
    exact = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
