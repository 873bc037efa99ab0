"""Every bundled prompt template parses and renders with its example inputs."""
from __future__ import annotations

import pytest

from gravity_core.prompts import PromptError, parse_prompt
from tasks.resources import load_prompt, prompt_names


@pytest.mark.parametrize("name", prompt_names())
def test_every_template_renders_its_example(name):
    template = load_prompt(name)
    assert template.name == name and template.version
    messages = template.render(**template.example)
    assert [m.role for m in messages] == ["system", "user"] and all(m.content for m in messages)
    request = template.request(**template.example)
    assert (request.prompt_name, request.prompt_version) == (name, template.version)


def test_prompt_names_cover_the_profile_stage():
    assert {"profile_values", "profile_value_summary", "profile_user_summary", "profile_personality",
            "profile_demographics"} <= set(prompt_names())


def test_missing_and_undeclared_inputs_are_errors():
    template = load_prompt("profile_values")
    with pytest.raises(PromptError, match="missing inputs"):
        template.render(reviews="r", statements=[])
    with pytest.raises(PromptError, match="undeclared"):
        template.render(**template.example, extra=1)


def test_declared_but_unused_input_is_an_error():
    text = "name: x\nversion: '1'\ninputs: [a, b]\nsystem: 'S {{ a }}'\nuser: 'U'\n"
    with pytest.raises(PromptError, match="never used"):
        parse_prompt(text)
