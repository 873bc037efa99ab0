"""One way to turn a pydantic ValidationError into a message a person can act on."""
from __future__ import annotations

from pydantic import ValidationError


def describe_validation(err: ValidationError, unknown: str = "unknown key '{}'", field: str = "'{}': {}") -> str:
    """'; '-joined problems, each naming its dotted key: `unknown` for a forbidden extra key,
    `field` (key, message) for anything else; a problem without a key is its message alone."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if not key:
            parts.append(e["msg"])
        elif e["type"] == "extra_forbidden":
            parts.append(unknown.format(key))
        else:
            parts.append(field.format(key, e["msg"]))
    return "; ".join(parts)
