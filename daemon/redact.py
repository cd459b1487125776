"""Credentials out of everything linewatch prints or publishes: one function for every camera URL form.

- `redact_url(url)`: a whole URL as configured. Its userinfo runs from `scheme://` to the *last* `@`, so a
  password holding `@`, `:`, `/` or spaces is hidden whole; query parameters that name a secret are masked.
  A `gst://` pipeline is free text (URLs and properties inside it).
- `redact(text)`: free text (a log value, an error, a status reason) that may contain URLs among other words:
  each `scheme://…@` up to the next blank or quote, GStreamer credential properties (`user-id=`, `user-pw=`,
  `proxy-pw=`, `…password=`), and secret-looking query parameters.

The user name is dropped with the password: some cameras take a token as the user. Ground floor: imports
nothing of linewatch.
"""

from __future__ import annotations

import re

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# scheme://userinfo@ in free text: the userinfo is everything up to the last '@' before a blank or a quote.
_URL_IN_TEXT = re.compile(r"""(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^\s'"<>]*@""")
# ?password=…, &token=…, ;apikey=…: the value up to the next separator.
_SECRET_WORDS = r"pass|pwd|secret|token|key|auth|sig|cred|session"
_QUERY_SECRET = re.compile(rf"(?i)(?P<lead>[?&;](?:[\w.\-]*(?:{_SECRET_WORDS})[\w.\-]*)=)[^&#;\s'\"]*")
# GStreamer element properties (user-id=admin, user-pw="a b", proxy-pw=x) and NAME=value pairs whose name says
# secret (…password=x): the value, quoted or up to the next blank (a GStreamer `!` stands between blanks).
_GST_SECRET = re.compile(
    r"""(?i)(?P<lead>(?<![\w-])(?:(?:user|proxy)-(?:id|pw)|[\w-]*(?:password|passwd|passphrase|secret|token|"""
    r"""api-?key)[\w-]*)\s*=\s*)(?:"[^"]*"|'[^']*'|\S+)""")


def _userinfo(match: re.Match[str]) -> str:
    return f"{match['scheme']}{MASK}@"


def redact(text: str) -> str:
    """Free text with every credential it holds replaced by `***`."""
    if "=" not in text and "@" not in text:
        return text  # the common case, at no cost: nothing here can hold a credential
    text = _URL_IN_TEXT.sub(_userinfo, text)
    text = _GST_SECRET.sub(lambda m: m["lead"] + MASK, text)
    return _QUERY_SECRET.sub(lambda m: m["lead"] + MASK, text)


def redact_url(url: str) -> str:
    """A whole configured URL with its credentials replaced by `***` (see the module's docstring)."""
    scheme = _SCHEME.match(url)
    if scheme is None or url[: scheme.end()].lower() == "gst://":
        return redact(url)
    rest = url[scheme.end():]
    if "@" in rest:
        rest = f"{MASK}@{rest.rsplit('@', 1)[1]}"
    return redact(url[: scheme.end()] + rest)


def redact_values(value: object) -> object:
    """`redact` applied to every string inside a JSON-like value (dicts, lists, tuples), keys left alone."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(item) for item in value]
    return value
