"""The model card's Markdown: a short table the class reads at a glance, the full card folded below it."""
from __future__ import annotations

import os

import pytest

from explorer.runs import RunRegistry

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
BUNDLED = sorted(n for n in os.listdir(ASSETS) if os.path.isfile(os.path.join(ASSETS, n, "config.json"))) \
    if os.path.isdir(ASSETS) else []


@pytest.fixture(scope="module")
def registry():
    return RunRegistry([ASSETS])


@pytest.mark.parametrize("name", BUNDLED)
def test_the_card_shows_the_name_and_a_few_rows_then_folds_the_full_table(registry, name):
    text = registry.get(name).card_markdown()
    short, folded = text.split("<details><summary>Full model card</summary>")
    assert short.startswith(f"### {name}\n")
    rows = [line for line in short.splitlines() if line.startswith("| ") and line != "| | |"]
    assert 4 <= len(rows) <= 8, rows
    for key in ("model", "dataset", "latent", "samples"):
        assert any(row.startswith(f"| {key} |") for row in rows), (key, rows)
    assert "| training steps |" in folded and "| exported points |" in folded
    assert folded.rstrip().endswith("</details>")
    # A blank line after the summary: the table inside the block is parsed as Markdown.
    assert folded.startswith("\n\n| | |")
