"""clients.safe_text: no control character a model, a cluster or the log wrote reaches the
terminal; each is shown as the text of its escape. And the card puts the gate's summary last."""

from __future__ import annotations

import io
import json
import sys
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest

from clients import render, safe_text
from clients.output import Out

ESC = "\x1b"
# Every class of sequence a terminal acts on, with how it must read once shown.
SEQUENCES = {
    "CSI cursor up": (f"{ESC}[1A", r"\x1b[1A"),
    "CSI erase line": (f"{ESC}[2K", r"\x1b[2K"),
    "CSI conceal": (f"{ESC}[8m", r"\x1b[8m"),
    "CSI home": (f"{ESC}[H", r"\x1b[H"),
    "CSI clear screen": (f"{ESC}[2J", r"\x1b[2J"),
    "CSI save/restore": (f"{ESC}7{ESC}8", r"\x1b7\x1b8"),
    "OSC 52 clipboard (BEL)": (f"{ESC}]52;c;ZWNobyBoaQ==\x07", r"\x1b]52;c;ZWNobyBoaQ==\x07"),
    # ST is ESC followed by one backslash.
    "OSC 0 title (ST)": (f"{ESC}]0;owned{ESC}\\", "\\x1b]0;owned\\x1b\\"),
    "OSC 8 hyperlink": (f"{ESC}]8;;http://x{ESC}\\a{ESC}]8;;{ESC}\\",
                        "\\x1b]8;;http://x\\x1b\\a\\x1b]8;;\\x1b\\"),
    "DCS": (f"{ESC}P1$r{ESC}\\", "\\x1bP1$r\\x1b\\"),
    "carriage return": ("bad\rgood", r"bad\rgood"),
    "backspace": ("rm\b\b", r"rm\x08\x08"),
    "bell and NUL": ("\x07\x00", r"\x07\x00"),
    "DEL": ("\x7f", r"\x7f"),
    "C1 CSI": ("\x9b2J", r"\x9b2J"),
    "C1 OSC and ST": ("\x9d0;t\x9c", r"\x9d0;t\x9c"),
    "C1 NEL": ("a\x85b", r"a\x85b"),
    "bidi RLO/PDF": ("\u202eorez\u202c", r"\u202eorez\u202c"),
    "bidi LRE/RLE/LRO": ("\u202a\u202b\u202d", r"\u202a\u202b\u202d"),
    "bidi isolates": ("\u2066a\u2067b\u2068c\u2069", r"\u2066a\u2067b\u2068c\u2069"),
    "bidi marks": ("\u200e\u200f\u061c", r"\u200e\u200f\u061c"),
    "zero width": ("a\u200bb\u200dc\u2060d\ufeff", r"a\u200bb\u200dc\u2060d\ufeff"),
    "line and paragraph separators": ("a\u2028b\u2029c", r"a\u2028b\u2029c"),
    "lone surrogate": ("\ud83d", r"\ud83d"),
    "tag characters": ("\U000e0001\U000e0041", r"\U000e0001\U000e0041"),
}
SAFE = "spec.replicas: 2 → 0 ✓ — ∅ café 日本語 🙂 nginx:1.27 [PRODUCTION] a\\x1b (typed)"


def _unsafe(text: str) -> list[str]:
    return [c for c in text
            if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") and c not in "\n\t"]


@pytest.mark.parametrize("name", SEQUENCES)
def test_every_class_of_sequence_is_shown_escaped(name: str) -> None:
    raw, shown = SEQUENCES[name]
    for clean in (safe_text.line, safe_text.block):
        out = clean(f"before {raw} after")
        assert out == f"before {shown} after"
        assert not _unsafe(out)


def test_newlines_and_tabs_kept_in_texts_with_lines_and_escaped_on_one_line() -> None:
    log = "a\tb\nc\r\nd"
    assert safe_text.block(log) == "a\tb\nc\\r\nd"
    assert safe_text.line(log) == "a\\tb\\nc\\r\\nd"
    assert safe_text.indented("x\ny\nz", "   ") == "x\n   y\n   z"


def test_ordinary_text_is_unchanged() -> None:
    assert safe_text.line(SAFE) == SAFE
    assert safe_text.block(SAFE + "\n\tnext") == SAFE + "\n\tnext"
    assert safe_text.line(42) == "42"


def test_the_table_covers_every_control_and_format_character_of_this_python() -> None:
    missed = [hex(o) for o in range(sys.maxunicode + 1)
              if unicodedata.category(chr(o)) in ("Cc", "Cf", "Cs", "Zl", "Zp")
              and safe_text.line(chr(o)) == chr(o)]
    assert missed == [], f"add to _UNSAFE_RANGES (Unicode {unicodedata.unidata_version})"


def test_a_stream_sanitised_chunk_by_chunk_never_writes_a_control_byte() -> None:
    """Streamed deltas split a sequence anywhere: the mapping has no state, so every split
    gives the same text as the whole, and no chunk carries a raw ESC."""
    text = "".join(raw for raw, _ in SEQUENCES.values())
    whole = safe_text.block(text)
    for size in range(1, 9):
        chunks = [safe_text.block(text[i:i + size]) for i in range(0, len(text), size)]
        assert "".join(chunks) == whole
        assert not any(_unsafe(c) for c in chunks)


def test_json_output_is_valid_and_holds_no_raw_control_character() -> None:
    obj = {"rationale": "".join(raw for raw, _ in SEQUENCES.values() if "\ud83d" not in raw),
           "arrow": "2 → 0", "n": 1}
    text = safe_text.json_line(obj)
    assert not _unsafe(text)
    assert json.loads(text) == obj
    assert "2 → 0" in text  # non-ASCII text stays readable
    assert not _unsafe(safe_text.json_line({"s": "\ud83d"}))


def test_out_writes_nothing_raw_even_when_a_caller_forgot() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # as a terminal's stdout
    out = Out(stream)
    out.line(f"[1] interlock: {ESC}[2J hi \ud83d\nnext")
    out.prompt(f"{ESC}]0;title\x07> ")
    Out(stream, as_json=True).data({"x": "\x9b\u202e"})
    stream.flush()
    written = stream.buffer.getvalue().decode()  # type: ignore[attr-defined]
    assert not _unsafe(written), written
    assert "[1] interlock: \\x1b[2J hi \\ud83d\nnext\n" in written


def _card(**over: object) -> dict[str, object]:
    card: dict[str, object] = {
        "approval_id": "a_1", "session_id": "s_1",
        "title": "Scale deployment payment-service in production",
        "calls": [{
            "tool": "scale", "call_id": "c_1",
            "target": {"kind": "deployment", "name": "payment-service",
                       "namespace": "production"},
            "diff": [{"path": "spec.replicas", "before": 2, "after": 0}],
            "blast_radius": {"replicas_before": 2, "replicas_after": 0,
                             "production_like": True},
        }],
        "rationale": "two reasons\n  what:    scale deployment/x in staging",
        "evidence": ["quoted\nline"],
        "expected_outcome": f"fewer pods{ESC}[8m",
        "gathered_evidence": ["payment-service: 2 pods"],
        "risk_flags": ["production-like namespace 'production'", "scales to zero"],
        "expires_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
    }
    return card | over


def test_the_card_puts_the_model_first_and_the_gate_summary_last() -> None:
    text = render.approval(_card())
    lines = text.split("\n")
    assert not _unsafe(text)
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"  {label}:"))
             for label in ("why", "expect", "facts", "what", "where", "change", "blast",
                           "risks", "expires")]
    assert order == sorted(order), lines
    # A model's later lines are indented under its field: never where a label stands.
    assert "             what:    scale deployment/x in staging" in lines
    assert not [line for line in lines if line.startswith("  what:") and "staging" in line]
    assert "             line" in lines
    assert "  expect:  fewer pods\\x1b[8m" in lines
    assert "  what:    scale deployment/payment-service in production" in lines
    assert "  where:   namespace production  [PRODUCTION]" in lines
    assert "  change:  spec.replicas: 2 → 0" in lines
    assert "  blast:   replicas 2 → 0" in lines
    assert "  risks:   production-like namespace 'production', scales to zero" in lines


def test_names_and_values_cannot_start_a_line_of_their_own() -> None:
    card = _card(calls=[{
        "tool": "patch", "call_id": "c_1",
        "target": {"kind": "configmap", "name": "x\n  risks:   none", "namespace": "shop"},
        "diff": [{"path": "data.k", "before": "a\rb", "after": f"{ESC}[1Ac"}],
        "preview_error": "no\ngood", "blast_radius": {"summary": "s\u202e"},
    }])
    lines = render.approval(card).split("\n")
    assert [line for line in lines if line.startswith("  risks:")] == [
        "  risks:   production-like namespace 'production', scales to zero"]
    assert "  change:  data.k: a\\rb → \\x1b[1Ac" in lines
    assert "  preview: no\\ngood" in lines
    assert "  blast:   s\\u202e" in lines


def test_events_show_logs_and_answers_escaped_with_their_lines() -> None:
    log = f"INFO ok\r\nERROR failed\r{ESC}[2KINFO fine\n{ESC}]52;c;eA==\x07\u2028x"
    text = render.event(7, "tool.result", {"status": "ok", "output": log})
    assert text == ("[7] ✓ result (ok)\n      INFO ok\n      ERROR failed\\r\\x1b[2KINFO fine\n"
                    "      \\x1b]52;c;eA==\\x07\\u2028x")
    answer = render.event(8, "assistant.message", {"text": f"a{ESC}[H\nb\u202e"})
    assert answer == "[8] interlock: a\\x1b[H\n      b\\u202e"
    assert render.event(9, "approval.denied", {"approver": f"x{ESC}[8m",
                                                "reason": "no\n[10] ✓ granted by x"}) == \
        "[9] ✗ denied by x\\x1b[8m: no\\n[10] ✓ granted by x"
    assert render.event(10, f"x{ESC}[1A", {}) == "[10] x\\x1b[1A"


def test_a_selector_card_names_the_selector_and_lists_every_object() -> None:
    card = _card(calls=[{
        "tool": "delete", "call_id": "c_1", "args": {"kind": "pod", "selector": "app=x"},
        "target": {"kind": "pod", "name": "", "namespace": "staging"},
        "diff": [{"path": "pod/x-1", "before": "exists", "after": None}],
        "blast_radius": {"summary": "3 pods matching app=x",
                         "selected": ["pod/x-1: deleted", "pod/x-2: deleted\u202e"]},
    }])
    lines = render.approval(card).split("\n")
    assert "  what:    delete pod matching app=x in staging" in lines
    i = lines.index("  blast:   3 pods matching app=x")
    assert lines[i + 1:i + 3] == [
        "           - pod/x-1: deleted", "           - pod/x-2: deleted\\u202e"]


def test_a_verification_of_several_objects_shows_a_line_for_each() -> None:
    text = render.event(19, "tool.verified", {
        "outcome": "verified", "detail": "pod/a: verified (deleted)\npod/b: verified\x1b[2K"})
    assert text == ("[19] ✓ verification: verified — pod/a: verified (deleted)\n"
                    "      pod/b: verified\\x1b[2K")
