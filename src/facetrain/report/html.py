"""A tiny HTML builder: headings, text, tables and PNGs embedded as base64, so one file is the whole report."""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Sequence

from facetrain.io_utils import atomic_write_bytes, encode_text

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{margin-top:1.6em;color:#335}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccd;padding:.25em .7em;text-align:right}
th{background:#eef}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}img{max-width:100%;border:1px solid #ddd}
pre{background:#f6f6fa;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


class HtmlReport:
    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def preformatted(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>" for row in rows
        )
        self._parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, png: str | os.PathLike, caption: str = "") -> bool:
        """Embed a PNG; returns False (and embeds nothing) when the file does not exist."""
        png = Path(png)
        if not png.is_file():
            return False
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">{cap}</figure>')
        return True

    def render(self) -> str:
        title = html.escape(self.title)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style>"
                f"</head><body><h1>{title}</h1>{''.join(self._parts)}</body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        atomic_write_bytes(path, encode_text(self.render()))
        return Path(path)
