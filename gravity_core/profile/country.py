"""Country as an inferable demographic (Amazon Reviews 2023 has no user attributes).

Inferred only where no country is given, chosen from a closed list of options plus "other"
(unknown). Pure: schema and parser; the call is made by `tasks.profiles`."""
from __future__ import annotations

from gravity_core.profile.facets import extract_json_object

OTHER = "other"


def country_schema(options: list[str]) -> dict:
    """JSON schema of the reply: {"country": one of the options or "other"}."""
    return {"type": "object", "properties": {"country": {"type": "string", "enum": [*options, OTHER]}},
            "required": ["country"], "additionalProperties": False}


def parse_country(text: str, options: list[str]) -> str | None:
    """Reply -> one of `options` (matched case-insensitively), or None for "other"."""
    value = str(extract_json_object(text).get("country", "")).strip()
    by_lower = {o.lower(): o for o in options}
    if value.lower() == OTHER:
        return None
    if value.lower() not in by_lower:
        raise ValueError(f"country must be one of {[*options, OTHER]}, got {value!r}")
    return by_lower[value.lower()]
