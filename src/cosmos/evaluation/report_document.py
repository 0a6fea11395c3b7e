"""The report as a document: a list of :class:`_Block` rendered to Markdown and to standalone HTML.

Why a module of its own: the report is written twice, as ``report.md`` and as ``report.html`` (the
PNGs embedded as data URIs so the single file renders in the KFP UI's HTML viewer), from one list
of blocks, without a Markdown library in the image. The section builders in
:mod:`cosmos.evaluation.report` decide what the blocks say; this module only decides how a block
looks in either format (escaping, tables, figures, collapsible details, inline ``code``).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass
class _Block:
    """One piece of the document, rendered to both Markdown and HTML (no markdown library needed)."""

    kind: str  # h2 | p | table | img | list | details
    text: str = ""
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    items: list[str] | None = None
    children: list[_Block] | None = None


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: Iterable[_Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}\n")
        elif b.kind == "h2":
            out.append(f"## {b.text}\n")
        elif b.kind == "h3":
            out.append(f"### {b.text}\n")
        elif b.kind == "p":
            out.append(b.text + "\n")
        elif b.kind == "list":
            out.append("\n".join(f"- {i}" for i in b.items or []) + "\n")
        elif b.kind == "table":
            out.append("| " + " | ".join(_md_cell(h) for h in b.header or []) + " |")
            out.append("|" + "|".join("---" for _ in b.header or []) + "|")
            out.extend("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows or [])
            out.append("")
        elif b.kind == "img":
            assert b.items, "an img block holds its file path in items"
            out.append(f"![{b.text}]({Path(b.items[0]).name})\n")
        elif b.kind == "details":
            out.append(f"<details><summary>{html.escape(b.text)}</summary>\n")
            out.append(_to_markdown(b.children or []))
            out.append("</details>\n")
    return "\n".join(out)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
  padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;height:auto}
summary{cursor:pointer;margin:0.4em 0}code{background:#f3f3f3;padding:0 3px}
"""


def _to_html(blocks: Iterable[_Block], title: str, embed: bool = True) -> str:
    def render(bs: Iterable[_Block]) -> list[str]:
        out: list[str] = []
        for b in bs:
            if b.kind in ("h1", "h2", "h3"):
                out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
            elif b.kind == "p":
                out.append(f"<p>{_inline_html(b.text)}</p>")
            elif b.kind == "list":
                out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items or []) + "</ul>")
            elif b.kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header or [])
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b.rows or []
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b.kind == "img":
                assert b.items, "an img block holds its file path in items"
                path = Path(b.items[0])
                if embed:
                    src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
                else:
                    src = html.escape(path.name)
                out.append(
                    f'<figure><img src="{src}" alt="{html.escape(b.text)}">'
                    f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
                )
            elif b.kind == "details":
                out.append(f"<details><summary>{html.escape(b.text)}</summary>")
                out.extend(render(b.children or []))
                out.append("</details>")
        return out

    body = "\n".join(render(blocks))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _inline_html(text: str) -> str:
    """Escape, then turn Markdown ``code`` spans into <code> (the only inline markup we emit)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
