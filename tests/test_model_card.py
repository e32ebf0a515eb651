"""The model card's Markdown: a short table the class reads at a glance, the full card folded below it."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from explorer.runs import RunRegistry
from explorer.site import card_rows

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


def test_a_warmed_up_run_says_so_on_both_cards_and_others_do_not(tmp_path):
    run_dir = tmp_path / "dsprites-btcvae"
    shutil.copytree(os.path.join(ASSETS, "dsprites-btcvae"), run_dir)
    original = RunRegistry([ASSETS]).get("dsprites-btcvae")
    assert "warm-up" not in original.card_markdown()
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["warmup_steps"] = 5000
    (run_dir / "config.json").write_text(json.dumps(config))
    run = RunRegistry([str(tmp_path)]).get("dsprites-btcvae")
    assert "| warm-up | regulariser weight 0 → 1 over the first 5,000 steps |" in run.card_markdown()
    rows = card_rows(run, run.n_points)
    assert ["warm-up", "regulariser weight 0 → 1 over the first 5,000 steps"] in rows
    assert [r[0] for r in rows].index("warm-up") == [r[0] for r in rows].index("beta") + 1
