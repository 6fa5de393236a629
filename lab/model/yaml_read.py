"""Read a topology file's YAML with limits, so no file can crash, hang or flood the loader.

ruamel's round-trip loader (it keeps line numbers for messages) with three limits:
- nesting: a topology is a few levels deep; 300 levels used to end in a RecursionError;
- aliases: `*name` repeats a value without copying it, so ten levels of ten aliases make 10^10
  values from a few lines (an "alias bomb") that every later step would walk;
- tags: `!!set`, `!!binary`, `!!omap` and custom tags make values the format has no words for
  (even `!!str 80` becomes a tagged object in the round-trip loader: quote instead).
Every refusal is a MarkedYAMLError at the offending line, reported like any parse error.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, SequenceNode

MAX_DEPTH = 64  # the deepest shipped topology is 7 levels
MAX_ALIAS_VALUES = 100_000  # values aliases may add beyond those written out


class _BoundedComposer(Composer):
    """Counts what aliases expand to (each node's expanded size, children before parents)."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.warn_double_anchors = False  # a warning would print unprefixed lines to stderr
        self.sizes: dict[int, int] = {}
        self.alias_values = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            self.alias_values += self.sizes.get(id(node), 1)
            if self.alias_values > MAX_ALIAS_VALUES:
                raise ComposerError(None, None, f"aliases expand to more than {MAX_ALIAS_VALUES:,} "
                                    "values; write the values out instead", event.start_mark)
            return node
        tag = getattr(event, "ctag", None)
        if tag is not None and str(tag) != "!":
            shown = str(tag).replace("tag:yaml.org,2002:", "!!")
            raise ComposerError(None, None, f"YAML tag {shown} is not supported; quote the "
                                "value, or write a plain list or mapping", event.start_mark)
        node = super().compose_node(parent, index)
        self.sizes[id(node)] = 1 + sum(self.sizes.get(id(c), 1) for c in _children(node))
        return node


def _children(node: Any) -> list:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer
    yaml.max_depth = MAX_DEPTH
    return yaml.load(text)
