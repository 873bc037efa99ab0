"""A deterministically degraded copy of a description, for the judge's sanity set.

A judge that cannot prefer the original description over a copy stripped of its facts and its
tone cannot be trusted to rank subtler personalizations. No model is involved: we drop
sentences, numbers and proper nouns and flatten the tone with fixed rules.
"""
from __future__ import annotations

import random
import re

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'“(A-Z0-9])")
_NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
                 "hundred thousand million billion first second third fourth fifth sixth seventh eighth "
                 "ninth tenth dozen dozens hundreds thousands millions").split()
_NUMBER = re.compile(r"\b(?:\d[\d,.:/-]*(?:st|nd|rd|th|s)?|(?:" + "|".join(_NUMBER_WORDS)
                     + r")(?:-(?:" + "|".join(_NUMBER_WORDS) + r"))?)\b", re.IGNORECASE)
_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|van|von|and)?\s*[A-Z][\w'’-]*)*")
_INTENSIFIERS = ("very really truly utterly deeply incredibly extraordinarily absolutely breathtaking "
                 "breathtakingly stunning stunningly gripping riveting captivating thrilling unforgettable "
                 "powerful powerfully brilliant brilliantly masterful masterfully mesmerizing haunting "
                 "heart-pounding heartbreaking exhilarating extraordinary remarkable spellbinding "
                 "page-turning compelling dazzling electrifying intense unputdownable epic").split()
_INTENSIFIER = re.compile(r"\b(?:" + "|".join(map(re.escape, _INTENSIFIERS)) + r")\b,?\s*", re.IGNORECASE)
_ASIDE = re.compile(r"\s*(?:—[^—]*—|—[^.!?]*|\([^)]*\))")
_PLACEHOLDER = "someone"
_FUNCTION_WORDS = {"I", "A", "An", "The", "Of", "And"}


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _drop_sentences(sentences: list[str], rng: random.Random) -> list[str]:
    """Keep about two thirds of the sentences (at least one), in their original order."""
    n_drop = len(sentences) // 3 if len(sentences) >= 3 else len(sentences) - 1
    dropped = set(rng.sample(range(len(sentences)), n_drop))
    return [s for i, s in enumerate(sentences) if i not in dropped]


def _unshout(sentence: str) -> str:
    """Lower-case shouted words; all-caps words of up to 3 letters are kept as acronyms (USA)."""
    return re.sub(r"\b[A-Z]{4,}\b", lambda m: m.group(0).lower(), sentence)


def _names(sentences: list[str]) -> set[str]:
    """Capitalised words seen inside a sentence (not first): the text's proper nouns."""
    return {word for sentence in sentences for match in _CAPITALISED.finditer(sentence) if match.start() > 0
            for word in match.group(0).split() if word[0].isupper() and word not in _FUNCTION_WORDS}


def _strip_proper_nouns(sentence: str, names: set[str]) -> str:
    """Replace runs of capitalised words with a placeholder. A sentence's lone first word counts
    only when it is a known name ("The" stays; "Henry" goes if Henry appears mid-sentence)."""
    def replace(match: re.Match) -> str:
        run = match.group(0).strip()
        at_start = match.start() == 0
        if run == "I" or (at_start and " " not in run and run not in names):
            return match.group(0)
        return "Someone" if at_start else _PLACEHOLDER
    return _CAPITALISED.sub(replace, sentence)


def _flatten(sentence: str) -> str:
    """Remove asides, intensifiers and exclamations; collapse spaces."""
    sentence = _ASIDE.sub(" ", sentence)
    sentence = _INTENSIFIER.sub("", sentence)
    sentence = re.sub(r"[!?]+", ".", sentence).replace("…", ".")
    sentence = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s{2,}", " ", sentence)).strip(" ,;:")
    return sentence if sentence.endswith(".") else sentence + "."


def degrade_description(text: str, seed: int) -> str:
    """The description with about a third of its sentences, all numbers and proper nouns dropped,
    and its tone flattened. Deterministic: the same text and seed give the same copy."""
    if not text.strip():
        raise ValueError("cannot degrade an empty description")
    rng = random.Random(seed)
    sentences = [_unshout(s) for s in _sentences(text)]
    names = _names(sentences)
    kept = _drop_sentences(sentences, rng)
    cleaned = [_flatten(_NUMBER.sub("", _strip_proper_nouns(s, names))) for s in kept]
    cleaned = [s[0].upper() + s[1:] for s in cleaned if len(s) > 1]
    return " ".join(cleaned) if cleaned else "A book."
