"""How a token reads, in every view: one function turns token ids into display strings, and two
small ones write such a string into a chart label or into HTML.

The strings come from `Tokenizer.display_pieces`: a character spread over several byte tokens (é,
你, 🦙) is shown whole on the token holding its first byte, and a special token by its name (`<s>`,
`<|eot_id|>`). Whitespace is made visible but quiet: a middle dot for a space, ↵ for a newline, →
for a tab, drawn grey. Both writers escape `<`, `>` and `&`, because Plotly reads a label as a small
subset of HTML — unescaped, `<s>` would open a strikethrough and vanish.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .tokenizer import Tokenizer

SPACE, NEWLINE, TAB = "·", "↵", "→"
CONTINUATION = "⋯"  # a token that holds only the rest of a character shown on the token before it
QUIET = "#999"  # the colour of the whitespace marks
LABEL_CHARS = 14  # a chart label longer than this is cut (the hover keeps it whole)


def display_tokens(tokenizer: Tokenizer | None, ids: Sequence[int], fallback: Sequence[str] = ()) -> list[str]:
    """One readable string per token id (see the module docstring); `fallback` (one piece per id) when
    there is no tokenizer to ask, as for a run read back from a report."""
    if tokenizer is None:
        return list(fallback)
    return tokenizer.display_pieces(list(ids))


def _marks(piece: str) -> list[tuple[str, bool]]:
    """(text, is a whitespace mark) runs of a piece: its spaces, newlines and tabs as visible marks."""
    if piece == "":
        return [(CONTINUATION, True)]
    runs: list[tuple[str, bool]] = []
    for char in piece:
        mark = {" ": SPACE, "\n": NEWLINE, "\t": TAB}.get(char)
        text, quiet = (mark, True) if mark else (char, False)
        if runs and runs[-1][1] == quiet:
            runs[-1] = (runs[-1][0] + text, quiet)
        else:
            runs.append((text, quiet))
    return runs


def plain_label(piece: str, max_chars: int | None = None) -> str:
    """The piece as plain text with visible whitespace, cut to `max_chars` with an ellipsis."""
    text = "".join(run for run, _ in _marks(piece))
    return text if max_chars is None or len(text) <= max_chars else text[: max_chars - 1] + "…"


def chart_label(piece: str, max_chars: int | None = LABEL_CHARS) -> str:
    """The piece as a Plotly label: escaped, whitespace marks in grey, cut to `max_chars` characters."""
    left, parts = max_chars if max_chars is not None else 10**9, []
    for run, quiet in _marks(piece):
        if left <= 0:
            break
        shown = run if len(run) <= left else run[: max(0, left - 1)] + "…"
        left -= len(run)
        parts.append(f'<span style="color:{QUIET}">{html.escape(shown)}</span>' if quiet else html.escape(shown))
    return "".join(parts)


def html_token(piece: str) -> str:
    """The piece as HTML text inside a token's span: escaped, spaces as themselves (the views use
    `white-space: pre-wrap`, and a generated token's background shows them), a grey mark before a
    newline or a tab, and a token that only continues the character before it as a thin sliver."""
    if piece == "":
        return '<span class="cont" title="the rest of the character before"></span>'
    text = html.escape(piece)
    return text.replace("\n", f'<span class="ws">{NEWLINE}</span>\n').replace("\t", f'<span class="ws">{TAB}</span>\t')


def positioned_labels(pieces: Sequence[str], max_chars: int | None = LABEL_CHARS) -> list[str]:
    """Unique chart labels for a sequence: position and piece, e.g. '12 ·the' (a category axis needs
    unique names, and a hover then says where the token is). Plain escaped text, no grey marks: these
    become tick labels by the dozen, and a styled run inside a label costs Plotly a measurement of its own."""
    return [f"{i} {html.escape(plain_label(p, max_chars))}" for i, p in enumerate(pieces)]
