"""Reading a Windows command script: lines, batch noise, quoting and `tag=value` arguments.

Each command keeps the line it started on, so every refusal can say `file:line: reason`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# Batch-file lines that configure nothing IPsec: comments, echo, pauses, batch variables.
_NOISE = re.compile(r"^(rem(\s.*)?|::.*|#.*|echo(\s.*|\.)?|echo|pause|cls|setlocal|endlocal|"
                    r"exit(\s.*)?|set\s+[A-Za-z_][A-Za-z0-9_]*=.*|goto\s+:eof)$", re.IGNORECASE)


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Command:
    where: Where
    words: tuple[str, ...]  # quotes removed, `tag = value` joined into `tag=value`
    text: str  # the line as written (continuations joined)


class Refusal(Exception):
    """One thing the importer cannot map exactly: raised inside a command's parser."""


def commands(path: str, text: str) -> tuple[list[Command], list[str]]:
    """The script's commands and the lines that could not be split into words."""
    out, problems = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i].strip()
        while line.endswith("^") and i + 1 < len(lines):  # cmd.exe line continuation
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        line = line.lstrip("@").strip()
        if not line or _NOISE.match(line):
            continue
        try:
            words = split(line)
        except ValueError as e:
            problems.append(f"{path}:{start}: cannot read the line: {e}")
            continue
        out.append(Command(Where(path, start), tuple(words), line))
    return out, problems


def split(line: str) -> list[str]:
    """cmd.exe-style words: double quotes group, backslashes are literal (\\\\host, C:\\)."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split, lexer.escape, lexer.commenters = True, "", ""
    lexer.quotes = '"'
    joined: list[str] = []
    glue = False  # the last word was `tag =`: the next word is its value
    for w in lexer:  # netsh accepts `tag = value` and `tag =value`: make them `tag=value`
        last = joined[-1] if joined else ""
        if w == "=" and last and "=" not in last:
            joined[-1], glue = last + "=", True
        elif w.startswith("=") and last and "=" not in last:
            joined[-1] = last + w
        elif last.endswith("=") and last.count("=") == 1 and (glue or "=" not in w):
            joined[-1], glue = last + w, False
        else:
            joined.append(w)
            glue = False
    return joined


def tagged(words: list[str] | tuple[str, ...], tags: tuple[str, ...]) -> dict[str, str]:
    """netsh arguments: `tag=value`, a tag may be shortened to any unique prefix (`qmsec=`),
    and tags may be left out when the values come in the documented order."""
    out: dict[str, str] = {}
    position = 0
    for word in words:
        if "=" in word:
            key, value = word.split("=", 1)
            full = expand_tag(key, tags)
        else:
            if position >= len(tags):
                raise Refusal(f"unexpected {word!r}: every value needs its tag (tag=value)")
            full, value = tags[position], word
        if full in out:
            raise Refusal(f"{full} is given twice")
        out[full] = value
        position = tags.index(full) + 1
    return out


def expand_tag(key: str, tags: tuple[str, ...]) -> str:
    key = key.lower()
    if key in tags:
        return key
    matches = [t for t in tags if t.startswith(key)] if key else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise Refusal(f"unknown parameter {key!r} (known: {', '.join(tags)})")
    raise Refusal(f"{key!r} is ambiguous: {', '.join(matches)}")


def yes_no(tag: str, value: str) -> bool:
    low = value.lower()
    if low in ("yes", "y"):
        return True
    if low in ("no", "n"):
        return False
    raise Refusal(f"{tag}={value}: expected yes or no")


def slug(name: str) -> str:
    """A Windows name as a topology name: lowercase, words joined with '-'.
    `FE to BE (HTTP)` -> `fe-to-be-http`; a name already in that form is unchanged."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text
