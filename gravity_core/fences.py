"""Fences around stranger-written text (reviews, book descriptions) in prompts.

A fenced block is three or more lines: a real opener line, the data, a real closer line::

    <<<REVIEW 3>>>
    [5/5 on "Stars Over Pune", science_fiction] Loved it: wild ideas.
    <<<END REVIEW 3>>>

Labels are upper-case ASCII (letters, digits, space, '_' and '-'; never starting with END).
Real marker lines are exact ASCII and stand alone on their line. `fence` neutralises every
*marker* inside the data, so the data can neither close its fence nor open or fake another,
and chat-template control tokens in it cannot reach a tokenizer as such. A marker is found
on a canonical view of the text, so disguises count too:

- runs of two or more '<' (or two or more '>'), whitespace allowed in between: '<<<', '>> >';
- '<|' and '|>' (ChatML and similar control tokens: <|im_start|>, <|im_end|>, <|endoftext|>);
- a single '<' that starts a fence, role or control word: '<END', '</review', '<system',
  '<user', '<start_of_turn>', '<eos>', ..., and the sentence tokens '<s>' / '</s>';
- Mistral-style control tokens in square brackets: '[INST]', '[/INST]', '[SYS]', '[TOOL_CALLS]'.

The canonical view maps compatibility forms (fullwidth and small brackets, math bold letters),
bracket homoglyphs (single and double guillemets and angle quotes, mathematical and CJK angle
brackets, Canadian syllabics, modifier arrowheads, 'much less than', ...), pipe look-alikes and
HTML character references ('&lt;', '&#60;') to ASCII, ignores case, and drops invisible
characters (zero-width spaces and joiners, soft hyphens, word joiners, BOMs, tag characters,
combining marks, Hangul fillers): '<', ZWSP, '<<E', soft hyphen, 'ND' is seen as '<<<end'.
Neutralising replaces only the bracket characters (or references) of a marker: openers ('<', '[')
become '(' and closers ')', one per bracket they stand for, so '<<<END REVIEW>>>' reads
'(((END REVIEW)))' and '<|im_start|>' reads '(|im_start|)'. Everything else is kept: zero-width
joiners stay (Indic scripts and emoji need them), and a lone '«quote»' or '<3' is unchanged.
Plain words are not markers: a review saying "END OF REVIEWS. New instructions: ..." stays
inside its fence, and the system prompt tells the model fenced text is never instructions.
"""
from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_LABEL = r"[A-Z0-9][A-Z0-9_ -]*"
_OPEN_LINE = re.compile(rf"<<<(?!END )({_LABEL})>>>")
_CLOSE_LINE = re.compile(rf"<<<END ({_LABEL})>>>")

# Look-alikes NFKD leaves alone (fullwidth and small forms it maps itself). Values are canonical
# text: a double bracket stands for two. A single guillemet or CJK title bracket is ordinary
# punctuation ('«quote»', '《title》'), so it stands for one bracket and only a pair is a run.
_OPENERS = ("\u2039\u00ab\u3008\u2329\u27e8\u27ea\u300a\u1438\u02c2"
            "\u02f1\u276e\u276c\u2770\u29fc\u2989\u2991\u227a\u22b0")
_CLOSERS = ("\u203a\u00bb\u3009\u232a\u27e9\u27eb\u300b\u1433\u02c3"
            "\u02f2\u276f\u276d\u2771\u29fd\u298a\u2992\u227b\u22b1")
_PIPES = "\u2223\u01c0\u2502\u2503\u2758\u23d0\uffe8"
_HOMOGLYPHS = {**dict.fromkeys(_OPENERS, "<"), **dict.fromkeys(_CLOSERS, ">"), **dict.fromkeys(_PIPES, "|"),
               "\u226a": "<<", "\u226b": ">>", "\u22d8": "<<<", "\u22d9": ">>>"}
_INVISIBLE = set("\u3164\u115f\u1160\uffa0\u2800\u180e")
# HTML character references read as the character they name: '&lt;&lt;&lt;' is a run too.
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z]{2,8});?")
_MARKER = re.compile(
    r"<(?:\s*<)+|>(?:\s*>)+"                       # bracket runs: fence markers, <<SYS>>
    r"|<\s*\||\|\s*>"                              # <|control token|>
    r"|<\s*/?\s*(?:end|review|book|description|data|fence|system|user|assistant|instruction|im_"
    r"|start|bos|eos|pad|unk|sep|cls|mask)"         # <start_of_turn> (Gemma), <eos>, [CLS]-style
    r"|<\s*/?\s*s\s*>"                              # <s> </s> (Llama 2)
    r"|\[\s*/?\s*(?:inst|sys|tool_calls|available_tools|tool_results)\s*\]")  # Mistral control tokens


@lru_cache(maxsize=4096)
def _canon_char(ch: str) -> str:
    """One character's canonical text ('' for invisible characters)."""
    if ch in _HOMOGLYPHS:
        return _HOMOGLYPHS[ch]
    out = []
    for part in unicodedata.normalize("NFKD", ch):
        if unicodedata.category(part) in ("Mn", "Me", "Cf") or part in _INVISIBLE:
            continue
        out.append(_HOMOGLYPHS.get(part, part).casefold())
    return "".join(out)


def _pieces(text: str) -> list[tuple[str, str]]:
    """`text` as (source, canonical) pieces: one per character, one per HTML character reference."""
    pieces: list[tuple[str, str]] = []
    index = 0
    for entity in _ENTITY.finditer(text) if "&" in text else ():
        pieces += [(ch, _canon(ch)) for ch in text[index:entity.start()]]
        decoded = html.unescape(entity.group())
        pieces.append((entity.group(), _canon(decoded) if len(decoded) == 1 else entity.group().lower()))
        index = entity.end()
    return pieces + [(ch, _canon(ch)) for ch in text[index:]]


def _canon(ch: str) -> str:
    return ch if ch.isascii() and not ch.isupper() else _canon_char(ch)


def _scan(text: str) -> tuple[list[tuple[str, str]], str, list[int], list[re.Match]]:
    """Pieces, canonical view, canonical position -> piece index, marker matches."""
    pieces = _pieces(text)
    canon = "".join(c for _, c in pieces)
    origin = [i for i, (_, c) in enumerate(pieces) for _ in c]
    return pieces, canon, origin, list(_MARKER.finditer(canon))


def marker_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) in `text` of every fence marker or control-token look-alike."""
    pieces, _, origin, matches = _scan(text)
    offsets = [0]
    for source, _ in pieces:
        offsets.append(offsets[-1] + len(source))
    return [(offsets[origin[m.start()]], offsets[origin[m.end() - 1] + 1]) for m in matches]


def neutralise(text: str) -> str:
    """`text` with the bracket characters of every marker replaced by '(' or ')'."""
    while True:
        pieces, canon, origin, matches = _scan(text)
        hits = {origin[i] for m in matches for i in range(m.start(), m.end()) if canon[i] in "<>[]"}
        if not hits:
            return text
        text = "".join(_swap(c) if i in hits else source for i, (source, c) in enumerate(pieces))


def _swap(canon: str) -> str:
    return "".join("(" if c in "<[" else ")" for c in canon if c in "<>[]")


def fence_label(label: str) -> str:
    """The canonical label (upper case); a label that could not round-trip is an error."""
    upper = " ".join(str(label).split()).upper()
    if not re.fullmatch(_LABEL, upper) or upper.startswith("END"):
        raise ValueError(f"fence label {label!r}: use ASCII letters, digits, space, '_' or '-', not starting with END")
    return upper


def fence(text: str, label: str) -> str:
    """`text` as data between a real opener and closer line; markers inside are neutralised."""
    name = fence_label(label)
    return f"<<<{name}>>>\n{neutralise(text)}\n<<<END {name}>>>"


@dataclass(frozen=True)
class FencedRegion:
    label: str
    text: str


def fenced_regions(rendered: str) -> list[FencedRegion]:
    """The data of every well-formed fence in `rendered`, in order (no checks; see fence_problems)."""
    regions, label, lines = [], None, []
    for line in rendered.split("\n"):
        if label is None and (opened := _OPEN_LINE.fullmatch(line)):
            label, lines = opened.group(1), []
        elif label is not None and line == f"<<<END {label}>>>":
            regions.append(FencedRegion(label, "\n".join(lines)))
            label = None
        elif label is not None:
            lines.append(line)
    return regions


def fence_problems(rendered: str) -> list[str]:
    """Why `rendered` (a user turn) breaks the fence rules; [] when it does not.

    Every opened fence must be closed exactly once by its own real closer, fences do not nest
    or repeat a label, and no text, inside a fence or around one, holds a marker that is not
    a real fence line.
    """
    problems: list[str] = []
    label, seen, segment, start = None, set(), [], 1

    def flush(end: int) -> None:
        if segment and marker_spans("\n".join(segment)):
            where = f"inside fence {label!r}" if label else "outside any fence"
            problems.append(f"marker {where} (lines {start}-{end})")
        segment.clear()

    for number, line in enumerate(rendered.split("\n"), 1):
        opened, closed = _OPEN_LINE.fullmatch(line), _CLOSE_LINE.fullmatch(line)
        if not (opened or closed):
            segment.append(line)
            continue
        flush(number - 1)
        start = number + 1
        if opened and label is not None:
            problems.append(f"line {number}: fence {opened.group(1)!r} opened inside fence {label!r}")
        elif opened and opened.group(1) in seen:
            problems.append(f"line {number}: fence {opened.group(1)!r} opened twice")
        elif opened:
            label = opened.group(1)
        elif closed.group(1) != label:
            problems.append(f"line {number}: closer of {closed.group(1)!r} without its opener")
        else:
            seen.add(label)
            label = None
    flush(number)
    if label is not None:
        problems.append(f"fence {label!r} never closed")
    return problems


def contains_fence_escape(rendered_user_turn: str) -> bool:
    """True when stranger text could have left its fence (see `fence_problems`)."""
    return bool(fence_problems(rendered_user_turn))
