"""Schema-guided decoding: the walk (pure) and the embedded model behind it (slow)."""
from __future__ import annotations

import json

import pytest

from gravity_core.guided import UnsupportedSchema, check_supported, guided_json
from gravity_core.profile.facets import levels_schema, parse_levels, parse_stances, stance_schema


class ScriptedOps:
    def __init__(self, picks, strings):
        self.picks, self.strings, self.fed = list(picks), list(strings), []

    def feed(self, text):
        self.fed.append(text)

    def choose(self, options):
        index = self.picks.pop(0)
        self.fed.append(options[index])
        return index

    def write_string(self, max_tokens):
        return self.strings.pop(0)


def test_walk_writes_valid_json_from_choices_and_strings():
    schema = {"type": "object", "properties": {
        "stance": {"enum": ["support", "no support", "neutral"]}, "why": {"type": "string"},
        "tags": {"type": "array", "minItems": 2, "items": {"type": "string"}}, "ok": {"type": "boolean"}}}
    ops = ScriptedOps([1, 0], ['he said "no"', "a", "b"])
    value = json.loads(guided_json(schema, ops))
    assert value == {"stance": "no support", "why": 'he said "no"', "tags": ["a", "b"], "ok": True}
    assert "".join(ops.fed).startswith('{"stance": "no support", "why": "')


def test_walk_resolves_refs_and_optional():
    schema = {"$defs": {"P": {"type": "object", "properties": {"x": {"enum": ["a", "b"]}}}},
              "type": "object", "properties": {"p": {"anyOf": [{"$ref": "#/$defs/P"}, {"type": "null"}]}}}
    assert json.loads(guided_json(schema, ScriptedOps([1], []))) == {"p": {"x": "b"}}


@pytest.mark.parametrize("schema", [{"type": "number"}, {"type": "array", "items": {"type": "string"}},
                                    {"type": "object"}, {"anyOf": [{"type": "string"}, {"type": "integer"}]}])
def test_unsupported_schemas_are_detected(schema):
    with pytest.raises(UnsupportedSchema):
        check_supported(schema)


@pytest.mark.slow
def test_embedded_model_writes_parseable_stances_and_levels(tmp_path_factory):
    from pathlib import Path

    from gravity_core.llm import ChatRequest, Message, SamplingParams
    from gravity_core.llm_config import BackendConfig
    from tasks.llm.local_backend import LocalBackend
    backend = LocalBackend(BackendConfig(torch_threads=2), Path(".gravity/cache")).load()
    ids = ["wvs-001", "wvs-005", "sch-01"]
    messages = (Message(role="user", content="Reviews: I pray every morning. Give stances as JSON."),)
    reply = backend.complete(ChatRequest(messages=messages, output_schema=stance_schema(ids),
                                         params=SamplingParams(max_tokens=40)))
    assert set(parse_stances(reply.text, ids)) == set(ids)
    reply = backend.complete(ChatRequest(messages=messages, output_schema=levels_schema()))
    assert len(parse_levels(reply.text)) == 5
    free = backend.complete(ChatRequest(messages=(Message(role="user", content="Say hello."),),
                                        params=SamplingParams(max_tokens=12)))
    assert free.text and free.output_tokens <= 12
