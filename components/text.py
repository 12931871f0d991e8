"""User strings shown as text and never as markup: in `st.markdown` and friends (`st_escape`), in the
canvas's node labels (`md_escape`), and in Plotly figures (`safe_figure`, `figure_text`).

Plotly draws trace names, titles, annotations and category tick labels through its own small HTML
subset (`<a href>`, `<span style>`, `<br>`...): a run named `<a href=...>` became a clickable link in a
legend and a `font-size:300px` span covered the charts. `safe_figure` escapes every such string of a
finished figure once (`<` `>` `&` as entities, which Plotly shows as the characters), so each figure
function calls it on return instead of each call site remembering to escape its inputs.
Hover templates are the studio's own markup and are left alone.

    >>> import plotly.graph_objects as go
    >>> safe_figure(go.Figure(go.Scatter(y=[1], name="<b>run</b>"))).data[0].name
    '&lt;b&gt;run&lt;/b&gt;'
    >>> print(st_escape("a_b <i>"))
    a\\_b \\<i\\>
"""

from __future__ import annotations

import html

_MD_SPECIAL = set("\\`*_{}[]()#+-.!|~$:")
_MARK = "_studio_escaped"  # set on a figure once escaped, so figures built from figures are not escaped twice


def md_escape(text: str) -> str:
    """Text shown literally by the component's markdown renderer (which also renders raw HTML)."""
    out = []
    for ch in str(text):
        if ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == "&":
            out.append("&amp;")
        elif ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def st_escape(text: str) -> str:
    """Text shown literally by st.markdown and friends (which never render raw HTML themselves)."""
    return "".join("\\" + ch if ch in _MD_SPECIAL or ch in "<>" else ch for ch in str(text))


def figure_text(value):
    """One user string as figure text; anything that is not a string is returned unchanged."""
    return html.escape(value, quote=False) if isinstance(value, str) else value


def _labels(values):
    if values is None or isinstance(values, str):
        return figure_text(values)
    try:
        items = list(values)
    except TypeError:
        return values
    if not any(isinstance(v, str) for v in items):
        return values  # numbers: leave numeric arrays as they are
    return [figure_text(v) for v in items]


def safe_figure(fig):
    """Escape every text a user can influence in `fig` (in place) and return it."""
    if getattr(fig, _MARK, False):
        return fig
    for trace in fig.data:
        for prop in ("name", "legendgroup", "text", "hovertext", "x", "y", "labels"):
            if prop in trace and trace[prop] is not None:
                trace[prop] = _labels(trace[prop])
        for dimension in trace["dimensions"] if "dimensions" in trace else ():  # parallel coordinates' axes
            dimension.label = figure_text(dimension.label)
            if "ticktext" in dimension and dimension.ticktext is not None:
                dimension.ticktext = _labels(dimension.ticktext)
    layout = fig.layout
    if layout.title.text:
        layout.title.text = figure_text(layout.title.text)
    for annotation in layout.annotations or ():
        annotation.text = figure_text(annotation.text)
    for axis in [layout[k] for k in layout if k.startswith(("xaxis", "yaxis"))]:
        if axis.title.text:
            axis.title.text = figure_text(axis.title.text)
        if axis.ticktext is not None:
            axis.ticktext = _labels(axis.ticktext)
    object.__setattr__(fig, _MARK, True)
    return fig
