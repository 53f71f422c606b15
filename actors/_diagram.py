"""Draws a transition table as a Mermaid state diagram, so the docs cannot drift.

``python -m actors._diagram`` prints the built-in quiz's diagram; docs/game.md
embeds exactly that text and a test compares the two.
"""

from __future__ import annotations

from ._phase import TransitionTable

__all__ = ["mermaid"]


def mermaid(table: TransitionTable) -> str:
    """A ``stateDiagram-v2`` of ``table``: one arrow per (source, target) pair.

    Labels of the rows that share an arrow are joined with ", " in table
    order, each group followed by its condition in brackets; a phase with no way out
    is drawn as an end state. The output is deterministic (same table, same
    text) and ends with a newline.
    """
    # (source, target) -> condition -> labels, all in first-seen order
    arrows: dict[tuple[str, str], dict[str, list[str]]] = {}
    for edge in table.edges():
        labels = arrows.setdefault((edge.source, edge.target), {}).setdefault(edge.condition, [])
        if edge.label not in labels:
            labels.append(edge.label)
    order = {name: index for index, name in enumerate(table.phases)}
    lines = ["stateDiagram-v2", f"    [*] --> {table.initial}"]
    for source, target in sorted(arrows, key=lambda pair: (order[pair[0]], order[pair[1]])):
        groups = [
            ", ".join(labels) + (f" [{condition}]" if condition else "")
            for condition, labels in arrows[(source, target)].items()
        ]
        lines.append(f"    {source} --> {target} : {', '.join(groups)}")
    for name in table.phases:
        if not any(src == name and dst != name for src, dst in arrows):
            lines.append(f"    {name} --> [*]")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from .quiz import QUIZ_TABLE

    print(mermaid(QUIZ_TABLE), end="")
