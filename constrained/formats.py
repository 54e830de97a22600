"""String `format`s we can enforce, as regexes over raw JSON-string characters.

Each regex is a sound subset of what `jsonschema`'s format checkers accept (e.g. dates only in
years 1000-2999 and never a 29th of February, times always with an offset as RFC 3339 requires),
and uses no quote, backslash or control character, so the string stays valid JSON unescaped.
outlines-core's own format regexes are not used: its `date` uses Unicode `\\d`, its `date-time`
makes the offset optional, and its `uri`/`email` can emit a raw `"`.
"""

from __future__ import annotations

_YEAR = r"[12][0-9]{3}"
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_DATE = f"{_YEAR}-{_MONTH_DAY}"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HEX = "[0-9a-fA-F]"
_PATH_CHARS = r"[A-Za-z0-9._~!$&'()*+,;=:@/-]"

FORMAT_REGEXES: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}T{_TIME}",
    "uuid": f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}",
    "ipv4": rf"{_OCTET}(?:\.{_OCTET}){{3}}",
    "hostname": rf"{_LABEL}(?:\.{_LABEL})*",
    "email": rf"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,}}",
    "uri": rf"https?://{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?(?:/{_PATH_CHARS}*)?",
}
# A relative reference is a path; an absolute URI is also a valid reference.
FORMAT_REGEXES["uri-reference"] = (
    rf"(?:{FORMAT_REGEXES['uri']}|/?[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*)"
)
