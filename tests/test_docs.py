"""The docs: the site builds with MkDocs in strict mode (nav, anchors and links between pages checked), and every
relative link and every code reference to a file of the checkout, in the README and every page, resolves.
Links that leave docs/ (schemas/, bench/results/, models/) are checked here against the files, since the site
does not carry them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), ROOT / "docker" / "README.md",
                ROOT / "systemd" / "README.md", ROOT / "models" / "MODEL_CARD.md"])
LINK = re.compile(r"\]\(([^)\s]+)\)")
# `daemon/events/stage.py`, `bench/results/tiles.md`, `schemas/`: a code span naming a path of the checkout
CODE_PATH = re.compile(r"`((?:daemon|tests|bench|models|docker|systemd|scripts|config|schemas|docs|\.ci)/[^`\s]*)`")


def _text_outside_fences(page: Path) -> str:
    kept, fence = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        if not fence:
            kept.append(line)
    return "\n".join(kept)


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    assert "fonts.googleapis" not in (tmp_path / "site" / "index.html").read_text(), "no web fonts: offline"


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(_text_outside_fences(page)):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == [], broken


def test_every_file_the_docs_name_in_code_exists() -> None:
    missing = []
    for page in PAGES:
        for name in CODE_PATH.findall(_text_outside_fences(page)):
            name = name.rstrip(".,;:")
            if "{" in name or "<" in name or "…" in name:
                continue  # a pattern (`bench/results/<name>.json`), not a file
            if not (list(ROOT.glob(name)) if "*" in name else (ROOT / name).exists()):
                missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert missing == [], missing


def _json_examples(page: Path) -> list[dict[str, object]]:
    """The JSON objects of a page's ```json blocks (a block may hold several, one after the other)."""
    import json

    found, block, inside = [], [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            if inside:
                text, decoder, at = "\n".join(block), json.JSONDecoder(), 0
                while at < len(text.rstrip()):
                    value, at = decoder.raw_decode(text, at)
                    found.append(value)
                    while at < len(text) and text[at].isspace():
                        at += 1
            inside, block = line.strip() == "```json", []
        elif inside:
            block.append(line)
    return found


def test_every_payload_example_in_the_docs_validates_against_its_schema() -> None:
    """A payload example (it names a `linewatch.*` schema, or is a status or availability message) must be a whole
    message that the JSON Schema in schemas/ accepts: the README's `end` example once left out five fields."""
    from tests.integration.payloads import _BY_SCHEMA, validator

    checked, failures = 0, []
    for page in PAGES:
        for example in _json_examples(page):
            schema = str(example.get("schema", ""))
            name = _BY_SCHEMA.get(schema) or ("availability-v1" if "client_id" in example and "state" in example else
                                              "status-v1" if "state" in example and "camera_id" in example else None)
            if name is None:
                assert not schema.startswith("linewatch."), f"{page}: no schema file for {schema}"
                continue
            checked += 1
            errors = [e.message for e in validator(name).iter_errors(example)]
            if errors:
                failures.append(f"{page.relative_to(ROOT)}: {name}: {errors[:3]}")
    assert checked >= 5 and failures == [], (checked, failures)
