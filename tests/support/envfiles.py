"""How systemd's EnvironmentFile= and `docker run --env-file` read an env file, to check ours against both.

Both are written from their sources' rules, not approximated by linewatch's own reader:
- systemd (src/basic/env-file.c, parse_env_file): `#` or `;` at the start of a line is a comment; NAME=value,
  whitespace around the name and before the value dropped; a value in single or double quotes is unquoted
  (backslash escapes in double quotes); an unquoted value keeps everything to the end of the line, a `#`
  included, less trailing whitespace; a backslash at the end of a line continues it.
- Docker (docker/cli opts/envfile.go, parseKeyValueFile): leading whitespace dropped; empty lines and lines
  starting with `#` skipped; NAME=value split at the first `=`; the value is kept byte for byte: no quotes
  removed, no comment cut, trailing whitespace kept; a NAME without `=` takes the caller's environment.
"""

from __future__ import annotations


def systemd_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].lstrip()
        index += 1
        while line.endswith("\\") and index < len(lines):  # continuation
            line = line[:-1] + lines[index]
            index += 1
        if not line or line[0] in "#;" or "=" not in line:
            continue
        name, value = line.split("=", 1)
        value = value.lstrip()
        if value[:1] in ("'", '"') and len(value) >= 2 and value.rstrip()[-1] == value[0]:
            quote, body = value[0], value.rstrip()[1:-1]
            value = body.replace('\\"', '"').replace("\\\\", "\\") if quote == '"' else body
        else:
            value = value.rstrip()
        values[name.strip()] = value
    return values


def docker_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if any(ch.isspace() for ch in name):
            raise ValueError(f"variable {name!r} contains whitespaces")  # docker refuses the file
        values[name] = value
    return values
