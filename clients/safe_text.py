"""The one sanitiser for what the CLI prints: text a model, a cluster or the log wrote never
reaches a terminal as control bytes.

A terminal obeys what it is sent: ESC starts cursor moves, erasures, conceal (CSI), window
titles and clipboard writes (OSC); a C1 character (U+0080 to U+009F, e.g. U+009B CSI) does the
same on some terminals; a carriage return overwrites a line; bidi overrides (U+202E, U+2066 to
U+2069) reorder what a person reads. A model's rationale or a pod's log could otherwise rewrite
an approval card. So every control character (Unicode categories Cc, Cf, Cs, Zl, Zp) is shown
as its escape, as text: ESC as `\\x1b`, U+202E as `\\u202e`. Newlines and tabs are kept where
a text has lines (logs, answers); everything else, including a carriage return, is spelled out.

The mapping is per character, so it needs no state: a streamed text sanitised chunk by chunk,
however an escape sequence is split across chunks, never writes a raw control byte.
"""

from __future__ import annotations

import json
import re

# Every code point of categories Cc, Cf, Cs, Zl and Zp (Unicode 15.1), as ranges. Written out
# because computing them from unicodedata at import costs the CLI ~0.4 s; a unit test checks
# the table against the running Python's Unicode database.
_UNSAFE_RANGES = (
    "\x00-\x1f\x7f-\x9f\xad"
    "\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[{_UNSAFE_RANGES}]")
# The same without newline and tab.
_UNSAFE_IN_LINES = re.compile(
    "[" + _UNSAFE_RANGES.replace("\x00-\x1f", "\x00-\x08\x0b-\x1f") + "]")


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(ch: str) -> str:
    """One character as the text of its escape: `\\r`, `\\x1b`, `\\u202e`, `\\U000e0001`."""
    if ch in _SHORT:
        return _SHORT[ch]
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def line(text: object) -> str:
    """A text shown on one line (a name, a reason, a field of a card): every control character
    escaped, newlines and tabs too, so it can neither act nor start a line of its own."""
    return _UNSAFE.sub(lambda m: escape(m.group()), str(text))


def block(text: object) -> str:
    """A text with lines (a log, an answer, a whole screenful): newlines and tabs kept, every
    other control character escaped."""
    return _UNSAFE_IN_LINES.sub(lambda m: escape(m.group()), str(text))


def indented(text: object, indent: str) -> str:
    """A text with lines, its second and later lines indented: a model's or a log's line can
    then never stand at the start of a line, where the CLI's own labels are."""
    return block(text).replace("\n", "\n" + indent)


def json_line(obj: object) -> str:
    """JSON for --json output: valid JSON whose text holds no raw control character (json.dumps
    escapes only C0 controls when it keeps non-ASCII text as it is)."""
    text = json.dumps(obj, ensure_ascii=False)
    return _UNSAFE.sub(lambda m: json.dumps(m.group())[1:-1], text)
