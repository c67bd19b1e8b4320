"""Small, dependency-free writers for Markdown and LaTeX (booktabs) tables."""

from __future__ import annotations

import re

import pandas as pd


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower()


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def markdown_table(df: pd.DataFrame, bold: pd.DataFrame | None = None, corner: str = "") -> str:
    header = [corner] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, (idx, row) in enumerate(df.iterrows()):
        cells = []
        for j, v in enumerate(row):
            text = _cell(v).replace("|", "\\|")
            cells.append(f"**{text}**" if bold is not None and bool(bold.iloc[i, j]) and text else text)
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$")


def latex_table(df: pd.DataFrame, bold: pd.DataFrame | None = None, caption: str = "", label: str = "") -> str:
    cols = "l" + "r" * len(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join([""] + [tex_escape(c) for c in df.columns]) + r" \\", r"\midrule"]
    for i, (idx, row) in enumerate(df.iterrows()):
        cells = []
        for j, v in enumerate(row):
            text = tex_escape(_cell(v))
            cells.append(rf"\textbf{{{text}}}" if bold is not None and bool(bold.iloc[i, j]) and text else text)
        lines.append(" & ".join([tex_escape(idx)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{tex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
