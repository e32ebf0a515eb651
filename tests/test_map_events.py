"""What the browser's map sends (clicks, selections) and the map overlay: hostile values are refused quietly."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from test_explorer_backend import table_run
from explorer import ui_map
from explorer.points import Points
from explorer.tabs.map_panel import MapPanel


class OneRun:
    """A registry stand-in that holds one in-memory run (the real registry loads folders)."""

    def __init__(self, run):
        self.run = run

    def get(self, name):
        return self.run


def clicked(row):
    return MapPanel.clicked_row(SimpleNamespace(_data={"row": row}))


def test_a_map_click_takes_only_whole_numbers():
    assert clicked(3) == 3 and clicked(3.0) == 3
    for bad in (math.nan, math.inf, -math.inf, 2.5, True, "3", None, [1]):
        assert not isinstance(clicked(bad), int), bad   # a no-op update, never an exception
    assert MapPanel.clicked_row(SimpleNamespace(_data=None)) is None
    # A click that names no point changes nothing: every output of the click's one request is skipped.
    panel = MapPanel(SimpleNamespace(points=None))
    panel._click_outputs = 4
    skipped = panel.map_clicked("run", {}, SimpleNamespace(_data={"row": math.nan}))
    assert len(skipped) == 5 and all(s == skipped[0] for s in skipped)


def test_a_selection_keeps_only_whole_numbers():
    assert ui_map.rows_from_event([1, 2.0, math.nan, math.inf, 2.5, True, "4", None, -math.inf]) == [1, 2]
    assert ui_map.rows_from_event("1,2") == [] and ui_map.rows_from_event(None) == []
    selected = MapPanel.map_selected(SimpleNamespace(_data={"rows": [0, math.nan, 7]}))
    assert selected == "0, 7"


def test_the_overlay_of_a_selection_larger_than_the_table_is_an_overlay():
    run = table_run(n=20)
    panel = MapPanel(SimpleNamespace(points=Points(OneRun(run))))
    too_many = ", ".join(str(i % 20) for i in range(100))
    update = panel.overlay("table", 0, 0, 1, "slerp", 8, 0.5, 0, too_many, {})
    overlay = update.props["overlay"]
    assert overlay["selected"] == {"x": [], "y": []} and len(overlay["marks"]) >= 3
    fine = panel.overlay("table", 0, 0, 1, "slerp", 8, 0.5, 0, "3, 4", {})
    fine_overlay = fine.props["overlay"]
    assert np.allclose(fine_overlay["selected"]["x"], np.round(run.latents["xy"][[3, 4], 0], 4))
