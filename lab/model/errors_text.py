"""Problems in human words: where a value is (`FILE:LINE: field`) and what is wrong with it.

Used by lab.model.load: YAML parse errors and JSON Schema errors become one line each,
naming the file, the line and the field path, in the words of the topology format.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
import itertools
import re
from collections.abc import Iterator
from typing import Any

import rapidfuzz.fuzz
import rapidfuzz.process
from jsonschema import ValidationError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from lab.model.topology import Where
from lab.model.yaml_read import MAX_DEPTH

Loc = tuple  # a place in the document: mapping keys (str) and list indexes (int)

# ---- YAML errors -------------------------------------------------------------------------------

_YAML_HINTS = {
    "expected <block end>": "bad indentation: this line does not line up with the lines above",
    "mapping values are not allowed here": "unexpected ':'; check the indentation, "
    "or quote a value that contains ': '",
    "did not find expected key": "bad indentation: expected a 'key: value' line here",
    "could not find expected ':'": "expected 'key: value'; check the indentation",
    "found character '\\t'": "tabs are not allowed; indent with spaces",
}


def yaml_problem(file: str, e: MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark else 1
    problem = str(e.problem or e.context or "cannot parse")
    context = str(e.context or "")
    if context.startswith("while scanning a quoted scalar") and e.context_mark:
        # the scanner stops at the end of the file; the mistake is where the quote opened
        return f"{file}:{e.context_mark.line + 1}: invalid YAML: this quote is never closed"
    if problem.startswith("maximum depth of data structure exceeded"):
        return f"{file}:{line}: invalid YAML: nested more than {MAX_DEPTH} levels deep"
    duplicate = re.match(r'found duplicate key "(.*?)"', problem)
    if duplicate:
        return f"{file}:{line}: invalid YAML: duplicate key {duplicate.group(1)!r}"
    for start, hint in _YAML_HINTS.items():
        if problem.startswith(start):
            return f"{file}:{line}: invalid YAML: {hint}"
    return f"{file}:{line}: invalid YAML: {problem}"


def reader_problem(file: str, text: str, e: ReaderError) -> str:
    """A character YAML does not allow (a control character): at its own line."""
    position = e.position if isinstance(e.position, int) else 0
    line = text.count("\n", 0, position) + 1
    char = e.character if isinstance(e.character, int) else 0
    return (f"{file}:{line}: invalid YAML: control character U+{char:04X} is not allowed; "
            "remove it")


# ---- where things are --------------------------------------------------------------------------


class Doc:
    """The parsed file and its name: turns a path into `FILE:LINE: field: message`."""

    def __init__(self, file: str, data: Any):
        self.file, self.data = file, data

    def line(self, path: Loc) -> int:
        """Line of the deepest key or item of `path` that exists (1-based)."""
        node = self.data
        line = node.lc.line + 1 if hasattr(node, "lc") else 1
        for part in path:
            try:
                if isinstance(node, dict) and part in node:
                    line = node.lc.key(part)[0] + 1
                elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                    line = node.lc.item(part)[0] + 1
                else:
                    break
            except (AttributeError, KeyError, IndexError):  # merged `<<:` keys have no position
                break
            node = node[part]
        return line

    def where(self, path: Loc) -> Where:
        return Where(self.file, self.line(path), field_name(path))

    def problem(self, path: Loc, message: str,
                field: Loc | None = None) -> tuple[int, str, str]:
        """(line, field, text): line and field kept apart so problems sort without parsing."""
        line, name = self.line(path), field_name(path if field is None else field)
        return line, name, f"{self.file}:{line}: {name + ': ' if name else ''}{message}"


def field_name(path: Loc) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def in_line_order(problems: list[tuple[int, str, str]], by_line_only: bool = False) -> list[str]:
    """Unique problem texts in line order; on one line, by field (or as given, with
    `by_line_only`); for one field, as found."""
    key = (lambda p: p[0]) if by_line_only else (lambda p: p[:2])
    return list(dict.fromkeys(text for *_, text in sorted(problems, key=key)))


def suggest(word: object, known: Any) -> str:
    """` (did you mean 'x'?)`, or nothing. Cached: a file can repeat one typo a thousand times."""
    # A tuple is taken as made once by the caller (Reader keeps its name lists), as text.
    names = known if isinstance(known, tuple) else tuple(str(k) for k in known)
    return _suggest(str(word), names)


@functools.lru_cache(maxsize=4096)
def _suggest(word: str, known: tuple[str, ...]) -> str:
    if not word:
        return ""
    names = _names(known)
    # A name the word starts with, or that starts with the word, wins over a close spelling:
    # `expectations` means `expect` rather than `exemptions`. Closest in length, then first.
    stems = [k for k in (word[:n] for n in range(3, len(word) + 1)) if k in names.index]
    start = bisect.bisect_left(names.ordered, word)
    stems += [k for k in itertools.takewhile(lambda k: k.startswith(word), names.ordered[start:])
              if len(k) >= 3]
    if stems:
        best = max(stems, key=lambda k: (-abs(len(k) - len(word)), -names.index[k]))
        return f" (did you mean {best!r}?)"
    # the same measure as difflib's get_close_matches (cutoff 0.6), in C: thousands of names
    close = rapidfuzz.process.extractOne(word, known, scorer=rapidfuzz.fuzz.ratio, score_cutoff=60)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass(frozen=True)
class _Names:
    index: dict[str, int]  # name -> its first place in the list
    ordered: list[str]  # sorted, to find the names starting with a word by bisection


@functools.lru_cache(maxsize=64)
def _names(known: tuple[str, ...]) -> _Names:
    index: dict[str, int] = {}
    for i, k in enumerate(known):
        index.setdefault(k, i)
    return _Names(index, sorted(index))


def bad_subnet(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an IPv4 subnet"
    if "/" not in value:
        return f"{value!r} is not an IPv4 subnet; add a prefix length: {net.network_address}/24?"
    return f"{value!r} has host bits set; the subnet is {net}"


# ---- schema errors -----------------------------------------------------------------------------

_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "text",
               "integer": "a whole number", "boolean": "true or false", "number": "a number"}


def _got(value: object) -> str:
    """A value as the user wrote it, or what kind of thing it is."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if value is None or isinstance(value, bool):
        return {None: "nothing", True: "true", False: "false"}[value]
    return repr(str(value)) if isinstance(value, str) else str(value)


def _show(value: object) -> str:
    """A value in YAML flow style, for lists of what was repeated."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_show, value)) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def schema_problems(doc: Doc, errors: Iterator[ValidationError]) -> list[tuple[int, str, str]]:
    errors = list(errors)
    # A value of the wrong type fails its enum or range too: say it once, as the type error.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    return [doc.problem(path, message, field)
            for error in errors
            if error.validator == "type" or tuple(error.absolute_path) not in mistyped
            for path, message, field in _explain(error)]


def _explain(e: ValidationError) -> Iterator[tuple[Loc, str, Loc]]:
    """(path for the line, message, field path) for one jsonschema error."""
    path = tuple(e.absolute_path)
    if "propertyNames" in e.absolute_schema_path:  # the error is about a key, not a value
        yield path + (e.instance,), f"name {_must(e)}", path + (str(e.instance),)
    elif e.validator == "additionalProperties":
        known = e.schema.get("properties", {})
        for key in [k for k in e.instance if k not in known]:
            yield path + (key,), f"unknown key {str(key)!r}{suggest(key, known)}", path
    elif e.validator == "required":
        for key in [k for k in e.validator_value if k not in e.instance]:
            yield path, f"missing required key {key!r}", path
    elif e.validator == "anyOf" and (isinstance(e.instance, (dict, list))
                                     or "x-expected" not in e.schema):
        yield from _explain_branch(e)
    else:
        yield path, _message(e), path


def _explain_branch(e: ValidationError) -> Iterator[tuple[Loc, str, Loc]]:
    # The value failed every branch: report the errors of the first branch of its type, that
    # is the first whose errors do not include a type mismatch of the value itself.
    branches: dict[int, list[ValidationError]] = {i: [] for i in range(len(e.validator_value))}
    for sub in e.context or ():
        branches[sub.relative_schema_path[0]].append(sub)
    for subs in branches.values():
        if not any(s.validator == "type" and not s.relative_path for s in subs):
            for sub in subs:
                yield from _explain(sub)
            return
    path = tuple(e.absolute_path)
    yield path, _must(e), path


def _must(e: ValidationError) -> str:
    expected = e.schema.get("x-expected") or _TYPE_WORDS.get(str(e.schema.get("type")), "valid")
    return f"must be {expected} (got {_got(e.instance)})"


def _message(e: ValidationError) -> str:
    v, value = e.validator, e.instance
    if v == "enum":
        choices = dict.fromkeys(_show(c) for c in e.validator_value)  # null and 'null': once
        return f"must be one of {', '.join(choices)} (got {_got(value)})"
    if v == "format" and e.validator_value == "ipv4":
        return f"{value!r} is not an IPv4 address"
    if v == "format":
        return bad_subnet(value)
    if v in ("minItems", "minProperties"):
        return "must not be empty"
    if v == "uniqueItems":
        dupes = dict.fromkeys(_show(x) for x in value if value.count(x) > 1)
        return f"lists {', '.join(sorted(dupes))} more than once"
    if v in ("type", "pattern", "anyOf", "minimum", "maximum", "exclusiveMinimum"):
        return _must(e)
    return e.message  # not expected with this schema; better raw than nothing
