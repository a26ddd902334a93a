"""Self-contained HTML reports (Jinja2 templates in kabigate/reports/templates; no network fetches)."""

from __future__ import annotations

import json

import jinja2

from kabigate import __version__
from kabigate.services.matrix import Matrix

# Reasons shown per failing cell; the rest are counted (a 6.1 build on a 6.12 kernel fails on every symbol).
MAX_REASONS_SHOWN = 200

_environment = jinja2.Environment(loader=jinja2.PackageLoader("kabigate.reports", "templates"),
                                  autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined)


def matrix_html(matrix: Matrix, details: dict[tuple[int, int], list[dict]]) -> str:
    """The matrix as one page: a heat map per stream, a cell's reasons on click, filters."""
    groups: dict[str, list] = {}
    for kernel in matrix.kernels:
        groups.setdefault(matrix.stream or (kernel.streams[0][0] if kernel.streams else "kernels in no stream"),
                          []).append(kernel)
    cells = {}
    for (build_id, kernel_id), modules in details.items():
        reasons = [dict(reason, module=module["name"]) for module in modules for reason in module["reasons"]]
        cells[f"{build_id}:{kernel_id}"] = {"reasons": reasons[:MAX_REASONS_SHOWN], "more": len(reasons) - len(
            reasons[:MAX_REASONS_SHOWN])}
    reason_codes = sorted({c.first_reason for c in matrix.cells.values() if c.first_reason})
    # Inside a <script> element "</script" ends it, and "<!--" then "<script" put the HTML tokenizer
    # in states where the element's own "</script>" no longer does (script data double escaped):
    # names are anyone's, so the JSON spells every "<" (found only inside its strings) "\u003c".
    cell_json = json.dumps(cells, separators=(",", ":")).replace("<", "\\u003c")
    return _environment.get_template("matrix.html").render(
        matrix=matrix, groups=groups, summary=matrix.summary(), reason_codes=reason_codes, cell_json=cell_json,
        version=__version__)
