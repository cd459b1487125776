"""The settings' error (one bounded, redacted line per problem: exit code 2) and the env file linewatch reads itself
(LINEWATCH_ENV_FILE): a small regular UTF-8 file, each line NAME=value, never echoed (a line may hold a password)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from dotenv.parser import parse_stream

from daemon.files import read_small_file
from daemon.redact import redact

ENV_FILE_VAR = "LINEWATCH_ENV_FILE"

_LINE_MAX = 400  # a problem line longer than this is cut in the middle: its variable and its hint stay


def _one_line(problem: str) -> str:
    text = " ".join(problem.split())
    return text if len(text) <= _LINE_MAX else f"{text[:_LINE_MAX // 2]} […] {text[-_LINE_MAX // 2:]}"


class ConfigError(Exception):
    """Invalid configuration: `problems` holds one human line per problem (exit code 2), each on one line, of
    bounded length, with credentials redacted (a value may be a camera URL with its password)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [redact(_one_line(problem)) for problem in problems]
        super().__init__("\n".join(self.problems))


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file: a small regular UTF-8 file (ConfigError naming LINEWATCH_ENV_FILE else)."""
    try:
        data = read_small_file(path)
    except ValueError as exc:
        raise ConfigError([f"{ENV_FILE_VAR}: {exc}"]) from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{ENV_FILE_VAR}: {str(path)!r} is not UTF-8 text (byte {data[exc.start]:#04x} on "
                           f"line {line}); save it as UTF-8"]) from None
    values: dict[str, str] = {}
    problems = []
    for binding in parse_stream(io.StringIO(text)):
        where = f"line {binding.original.line} of {str(path)!r}"
        after = binding.original.string.partition("=")[2]
        if binding.error:  # the line itself is not shown: it may hold a password
            name = binding.original.string.partition("=")[0].strip()
            shown = f" (it starts with {name[:60]!r})" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else ""
            problems.append(f"{ENV_FILE_VAR}: {where} is not NAME=value{shown}; quotes must close on the line")
        elif binding.key is None:  # a comment or a blank line
            continue
        elif binding.value is None:
            problems.append(f"{ENV_FILE_VAR}: {where}: {binding.key} has no '='; write {binding.key}= for an empty "
                            "value")
        elif "#" in after and "#" not in binding.value:
            # python-dotenv drops it; systemd's EnvironmentFile= and `docker --env-file` keep it in the value.
            problems.append(f"{ENV_FILE_VAR}: {where}: {binding.key} has a comment after its value, which systemd and "
                            "Docker read as part of the value; put the comment on a line of its own")
        else:
            values[binding.key] = binding.value
    if problems:
        raise ConfigError(problems)
    return values
