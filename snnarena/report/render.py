"""A small document model (sections of tables, figures, text) rendered to HTML and Markdown.

Every string is escaped when rendered — :func:`html.escape` for HTML, pipes/angle brackets for
Markdown — so names and messages coming from suites or plugins can never inject markup. The HTML
is self-contained: inline CSS, PNG figures as base64 ``data:`` URIs, no script, no remote asset.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from urllib.parse import quote

from snnarena.report.figures import Plot


@dataclass
class Cell:
    text: str
    best: bool = False
    numeric: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    arrows: list[str] = field(default_factory=list)
    caption: str = ""

    def __post_init__(self) -> None:
        if not self.arrows:
            self.arrows = [""] * len(self.columns)


@dataclass
class Text:
    text: str
    kind: str = "p"  # "p", "note", "warning" or "pre"


@dataclass
class Figures:
    plots: list[Plot]


@dataclass
class Links:
    items: list[tuple[str, str, str]]  # (text, relative href, note)


@dataclass
class Details:
    summary: str
    body: str


@dataclass
class KeyValues:
    items: list[tuple[str, str]]


Block = Table | Text | Figures | Links | Details | KeyValues


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)
    anchor: str = ""


def _e(value: str) -> str:
    return html.escape(str(value), quote=True)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1440px;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{font-size:1.7rem;margin:.2rem 0 .4rem}h2{font-size:1.35rem;margin-top:2.4rem;border-bottom:1px solid #d0d7de;
padding-bottom:.3rem}h3{font-size:1.1rem;margin-top:1.8rem}h4{font-size:1rem;margin:1.2rem 0 .4rem}
p,li{line-height:1.5}.note{color:#59636e;font-size:.9rem}
.warning{background:#fff8c5;border-left:4px solid #d4a72c;padding:.4rem .7rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.86rem}
th,td{border:1px solid #d0d7de;padding:.25rem .45rem;vertical-align:top}td{max-width:26rem}
td:first-child{white-space:nowrap}
th{background:#f6f8fa;text-align:left;white-space:nowrap}tr:nth-child(even) td{background:#fbfcfd}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:700;background:#dafbe1!important}
caption{caption-side:top;text-align:left;color:#59636e;font-size:.85rem;padding-bottom:.25rem}
.arrow{color:#59636e;font-weight:400}.scroll{overflow-x:auto;max-width:100%}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1rem;margin:.6rem 0}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:.6rem;background:#fff}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.82rem;color:#59636e;margin-top:.4rem}
pre{background:#f6f8fa;padding:.7rem;overflow-x:auto;font-size:.78rem;border-radius:6px}
details{margin:.3rem 0}summary{cursor:pointer}
nav ul{columns:2;padding-left:1.2rem}code{background:#f6f8fa;padding:0 .2rem;border-radius:3px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.86rem}dt{font-weight:600}
dd{margin:0;word-break:break-all}
"""


class HtmlWriter:
    """Renders sections to one self-contained HTML page."""

    def page(self, title: str, subtitle: str, sections: list[Section]) -> str:
        nav = "".join(f'<li><a href="#{_e(s.anchor)}">{_e(s.title)}</a></li>' for s in sections)
        body = "".join(self.section(s, 2) for s in sections)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
            f'<h1>{_e(title)}</h1><p class="note">{_e(subtitle)}</p>'
            f"<nav><ul>{nav}</ul></nav>{body}</main></body></html>\n"
        )

    def section(self, section: Section, level: int) -> str:
        anchor = f' id="{_e(section.anchor)}"' if section.anchor else ""
        parts = [f"<section><h{level}{anchor}>{_e(section.title)}</h{level}>"]
        parts.extend(self.block(b) for b in section.blocks)
        parts.extend(self.section(c, min(level + 1, 4)) for c in section.children)
        parts.append("</section>")
        return "".join(parts)

    def block(self, block: Block) -> str:
        if isinstance(block, Table):
            return self.table(block)
        if isinstance(block, Text):
            if block.kind == "pre":
                return f"<pre>{_e(block.text)}</pre>"
            cls = f' class="{block.kind}"' if block.kind in ("note", "warning") else ""
            return f"<p{cls}>{_e(block.text)}</p>"
        if isinstance(block, Figures):
            return '<div class="figs">' + "".join(self.figure(p) for p in block.plots) + "</div>"
        if isinstance(block, Links):
            items = "".join(
                f'<li><a href="{_e(quote(href))}">{_e(text)}</a>' + (f" — {_e(note)}" if note else "") + "</li>"
                for text, href, note in block.items
            )
            return f"<ul>{items}</ul>"
        if isinstance(block, Details):
            return f"<details><summary>{_e(block.summary)}</summary><pre>{_e(block.body)}</pre></details>"
        items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in block.items)
        return f"<dl>{items}</dl>"

    def table(self, table: Table) -> str:
        head = "".join(
            f"<th>{_e(c)}" + (f' <span class="arrow">{_e(a)}</span>' if a else "") + "</th>"
            for c, a in zip(table.columns, table.arrows, strict=True)
        )
        rows = []
        for row in table.rows:
            cells = []
            for cell in row:
                classes = " ".join(c for c in ("num" if cell.numeric else "", "best" if cell.best else "") if c)
                attr = f' class="{classes}"' if classes else ""
                cells.append(f"<td{attr}>{_e(cell.text)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
        return (
            f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )

    def figure(self, plot: Plot) -> str:
        data = base64.b64encode(plot.png).decode("ascii")
        return (
            f'<figure><img alt="{_e(plot.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(plot.caption)} (figures/{_e(plot.name)}.png, .svg)</figcaption></figure>"
        )


def md_escape(value: str) -> str:
    """Text safe inside a Markdown paragraph or table cell."""
    out = html.escape(str(value), quote=False)
    for char in ("\\", "|", "*", "_", "`", "[", "]"):
        out = out.replace(char, "\\" + char)
    return " ".join(out.split("\n"))


class MarkdownWriter:
    """Renders the same sections to GitHub-flavoured Markdown (figures linked from figures/)."""

    def page(self, title: str, subtitle: str, sections: list[Section]) -> str:
        out = [f"# {md_escape(title)}", "", md_escape(subtitle), ""]
        for s in sections:
            out.extend(self.section(s, 2))
        return "\n".join(out).rstrip() + "\n"

    def section(self, section: Section, level: int) -> list[str]:
        out = ["#" * level + " " + md_escape(section.title), ""]
        for block in section.blocks:
            out.extend(self.block(block))
            out.append("")
        for child in section.children:
            out.extend(self.section(child, min(level + 1, 4)))
        return out

    def block(self, block: Block) -> list[str]:
        if isinstance(block, Table):
            return self.table(block)
        if isinstance(block, Text):
            if block.kind == "pre":
                return ["```", block.text.replace("```", "'''"), "```"]
            if block.kind == "warning":
                return ["> **" + md_escape(block.text) + "**"]
            return [("*" + md_escape(block.text) + "*") if block.kind == "note" else md_escape(block.text)]
        if isinstance(block, Figures):
            return [f"![{md_escape(p.caption)}](figures/{quote(p.name)}.png)" for p in block.plots]
        if isinstance(block, Links):
            return [
                f"- [{md_escape(t)}](<{quote(h)}>)" + (f" — {md_escape(n)}" if n else "") for t, h, n in block.items
            ]
        if isinstance(block, Details):
            return [f"**{md_escape(block.summary)}**", "", "```", block.body.replace("```", "'''"), "```"]
        return [f"- **{md_escape(k)}**: {md_escape(v)}" for k, v in block.items]

    def table(self, table: Table) -> list[str]:
        head = [md_escape(c) + (f" {a}" if a else "") for c, a in zip(table.columns, table.arrows, strict=True)]
        out = [f"*{md_escape(table.caption)}*", ""] if table.caption else []
        out.append("| " + " | ".join(head) + " |")
        out.append(
            "| "
            + " | ".join("---:" if any(r[i].numeric for r in table.rows) else "---" for i in range(len(head)))
            + " |"
        )
        for row in table.rows:
            cells = [(f"**{md_escape(c.text)}**" if c.best and c.text else md_escape(c.text)) for c in row]
            out.append("| " + " | ".join(cells) + " |")
        return out
