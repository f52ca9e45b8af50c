"""The named fixes of `curate repair`, each a function from one text to its repaired text (the same object when
there is nothing to repair), and the checks that count what a fix leaves for a person.

    mojibake            ftfy's encoding repair alone, applied only when ftfy's badness heuristic calls the text
                        bad and the repaired text is not bad and has no new U+FFFD
    control_characters  C0 controls other than \\t \\n \\r, DEL, U+FEFF and whole ANSI escape sequences removed;
                        C1 characters (U+0080-U+009F) and \\b or \\f before a letter are left (see below)
    whitespace          \\r\\n -> \\n; leading blank lines, up to 3 leading spaces (unless other lines are indented
                        too) and trailing ASCII whitespace removed, except at the end of a text inside a code fence
    code_fence          an unclosed ``` or ~~~ fence (CommonMark's rules) closed at the end of the text
    tool_arguments      whitespace between the tokens of a JSON-object argument string removed; nothing else
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from curate.errors import MissingDependency
from curate.validate.structure import text_findings

# ---------------------------------------------------------------- mojibake


@lru_cache(maxsize=1)
def _ftfy() -> tuple[Any, Any, Any]:
    """(fix_encoding, is_bad, the config with only the encoding repair on)."""
    try:
        import ftfy
        from ftfy.badness import is_bad
    except ImportError as exc:
        raise MissingDependency("ftfy", "repair", "the `mojibake` fix of curate repair; or name the other fixes "
                                                  "with --fix") from exc
    # replace_lossy_sequences is off: it writes U+FFFD where it cannot decode, which is a loss, not a repair
    config = ftfy.TextFixerConfig(
        unescape_html=False, remove_terminal_escapes=False, fix_encoding=True, restore_byte_a0=True,
        replace_lossy_sequences=False, decode_inconsistent_utf8=True, fix_c1_controls=True,
        fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
        fix_surrogates=False, remove_control_chars=False, normalization=None, explain=False)
    return ftfy.fix_encoding, is_bad, config


def load_mojibake() -> None:
    """Import ftfy now, so a missing extra stops the command before it writes anything."""
    _ftfy()


def mojibake(text: str) -> str:
    """The text with its encoding damage undone, where ftfy is certain; else the text as it is."""
    if text.isascii():
        return text
    fix_encoding, is_bad, config = _ftfy()
    if not is_bad(text):
        return text
    fixed = fix_encoding(text, config)
    if fixed == text or is_bad(fixed) or fixed.count("\ufffd") > text.count("\ufffd"):
        return text
    return fixed


def mojibake_left(text: str) -> bool:
    """Whether `curate validate` flags the text as mojibake (what the fix was not certain enough to repair)."""
    return not text.isascii() and any(f.code == "mojibake" for f in text_findings([{"content": text}]))


# ---------------------------------------------------------------- control characters

# \b and \f before a letter are usually a LaTeX command (\beta, \frac) whose backslash a JSON escape took: removing
# the character would leave `rac`, so it is left for a person. C1 characters are what bytes read as Latin-1 look
# like (U+0093 is cp1252's left quote; 'â\x80\x94' is an em dash): the mojibake fix repairs them when it is sure.
_ANSI = "\x1b\\[[0-?]*[ -/]*[@-~]"
_CONTROL = re.compile(f"{_ANSI}|[\x00-\x07\x0b\x0e-\x1f\x7f\ufeff]|[\x08\x0c](?![A-Za-z])")
_CONTROL_LEFT = re.compile("[\x80-\x9f]|[\x08\x0c](?=[A-Za-z])")


def control_characters(text: str) -> str:
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def control_characters_left(text: str) -> bool:
    return _CONTROL_LEFT.search(text) is not None


# ---------------------------------------------------------------- code fences

_FENCE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)", re.DOTALL)


def open_fence(text: str) -> str | None:
    """The fence (``` or ~~~, as long as it was opened) left open at the end of the text, or None.

    CommonMark's rules: a fence line is indented at most 3 spaces; a closing fence uses the opening's character, is
    at least as long and carries nothing after it; a ``` line with another ` after it (```x```) is inline code."""
    if "```" not in text and "~~~" not in text:
        return None
    fence = None
    for line in text.split("\n"):
        m = _FENCE.fullmatch(line)
        if m is None:
            continue
        mark, rest = m.group(2), m.group(3)
        if fence is None:
            if not (mark[0] == "`" and "`" in rest):
                fence = mark
        elif mark[0] == fence[0] and len(mark) >= len(fence) and not rest.strip(" \t\r"):
            fence = None
    return fence


def code_fence(text: str) -> str:
    fence = open_fence(text)
    if fence is None:
        return text
    return text + ("" if text.endswith("\n") else "\n") + fence


# ---------------------------------------------------------------- whitespace

_SPACE = " \t\n\r"  # ASCII only: a leading U+3000 is a CJK paragraph indent, not a stray space


def whitespace(text: str) -> str:
    """\\r\\n -> \\n; leading blank lines; up to 3 leading spaces (Markdown ignores them), unless another line is
    indented too (a table, a poem, code: the first line is aligned with it; 4 spaces or a tab are indented code);
    trailing whitespace, unless the text ends inside a code fence. Blank texts stay blank."""
    t = text.replace("\r\n", "\n") if "\r" in text else text
    body = t.lstrip(_SPACE)
    if not body:
        return t  # only whitespace: validate's empty_content reports it; emptying it would change nothing
    lead = t[: len(t) - len(body)]
    indent = lead[max(lead.rfind("\n"), lead.rfind("\r")) + 1 :]
    layout = "\t" in indent or len(indent) >= 4 or "\n " in body or "\n\t" in body  # code, or aligned lines
    t = (indent if layout else "") + body
    if t[-1] in _SPACE and open_fence(t) is None:
        t = t.rstrip(_SPACE)
    return t if t != text else text


# ---------------------------------------------------------------- tool-call arguments

_JSON_SPACE = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+', re.DOTALL)


def _object(args: Any) -> bool:
    try:
        return isinstance(json.loads(args), dict)
    except ValueError:
        return False


def tool_arguments(args: str) -> str:
    """A JSON-object argument string without the whitespace between its tokens. Keys keep their order (the order
    a model is taught to write them in), numbers and escapes their spelling: only insignificant bytes go.
    Anything else (not JSON, not an object) is left for validate's invalid_tool_arguments."""
    if not args or not _object(args):
        return args
    out = _JSON_SPACE.sub(lambda m: m.group(1) or "", args)
    return out if out != args else args


def tool_arguments_left(args: Any) -> bool:
    return isinstance(args, str) and args != "" and not _object(args)
