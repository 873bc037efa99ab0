"""Schema-guided JSON decoding, independent of any model.

A small model rarely writes valid JSON by itself. Instead of parsing free text, the local
backend walks the JSON schema: it writes the punctuation and keys itself, asks the model
to *choose* among enum values (scored by likelihood) and to *write* only string contents.
The result is well-formed by construction. The walk is pure; the model sits behind `Ops`.
"""
from __future__ import annotations

import json
from typing import Any, Protocol


class UnsupportedSchema(ValueError):
    """The schema uses a construct the guided walk does not cover."""


class Ops(Protocol):
    """What the walk needs from a model."""

    def feed(self, text: str) -> None:
        """Append fixed text to the model's context."""

    def choose(self, options: list[str]) -> int:
        """Index of the most likely continuation among `options`; the chosen one is appended."""

    def write_string(self, max_tokens: int) -> str:
        """Generate string contents up to the closing quote (not included)."""


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise UnsupportedSchema(f"unsupported $ref {ref}")
        schema = root.get("$defs", {})[ref.split("/")[-1]]
    variants = schema.get("anyOf") or schema.get("oneOf")
    if variants:
        non_null = [v for v in variants if v.get("type") != "null"]
        if len(non_null) != 1:
            raise UnsupportedSchema("anyOf with more than one non-null variant")
        return _resolve(non_null[0], root)
    return schema


def _string_tokens(schema: dict, default: int) -> int:
    max_len = schema.get("maxLength")
    return max(4, min(default, max_len // 3)) if max_len else default


def _walk(schema: dict, root: dict, ops: Ops, string_tokens: int) -> Any:
    schema = _resolve(schema, root)
    if "enum" in schema or "const" in schema:
        options = schema.get("enum", [schema.get("const")])
        texts = [json.dumps(o, ensure_ascii=False) for o in options]
        if len(texts) == 1:
            ops.feed(texts[0])
            return options[0]
        return options[ops.choose(texts)]
    kind = schema.get("type")
    if kind == "boolean":
        return _walk({"enum": [True, False]}, root, ops, string_tokens)
    if kind == "string":
        ops.feed('"')
        value = ops.write_string(_string_tokens(schema, string_tokens))
        ops.feed('"')
        return value
    if kind == "object":
        return _walk_object(schema, root, ops, string_tokens)
    if kind == "array":
        return _walk_array(schema, root, ops, string_tokens)
    raise UnsupportedSchema(f"unsupported schema type {kind!r}")


def _walk_object(schema: dict, root: dict, ops: Ops, string_tokens: int) -> dict:
    properties = schema.get("properties") or {}
    if not properties:
        raise UnsupportedSchema("object without declared properties")
    ops.feed("{")
    value = {}
    for i, (name, sub) in enumerate(properties.items()):
        ops.feed(("" if i == 0 else ", ") + json.dumps(name) + ": ")
        value[name] = _walk(sub, root, ops, string_tokens)
    ops.feed("}")
    return value


def _walk_array(schema: dict, root: dict, ops: Ops, string_tokens: int) -> list:
    count = schema.get("minItems", schema.get("maxItems"))
    if count is None:
        raise UnsupportedSchema("array needs minItems or maxItems for guided decoding")
    item = _resolve(schema.get("items", {}), root)
    unique = schema.get("uniqueItems") and "enum" in item
    if unique and count > len(item["enum"]):
        raise UnsupportedSchema("uniqueItems array longer than its enum")
    ops.feed("[")
    items = []
    for i in range(count):
        if i:
            ops.feed(", ")
        # uniqueItems over an enum (a ranking): each position chooses among the values not yet used
        left = {"enum": [o for o in item["enum"] if o not in items]} if unique else item
        items.append(_walk(left, root, ops, string_tokens))
    ops.feed("]")
    return items


def check_supported(schema: dict) -> None:
    """Raise `UnsupportedSchema` unless the whole schema can be walked (dry run)."""

    class _Dry:
        def feed(self, text): pass
        def choose(self, options): return 0
        def write_string(self, max_tokens): return ""

    _walk(schema, schema, _Dry(), 1)


def guided_json(schema: dict, ops: Ops, string_tokens: int = 120) -> str:
    """Decode one JSON value following `schema`; returns its JSON text."""
    return json.dumps(_walk(schema, schema, ops, string_tokens), ensure_ascii=False)
