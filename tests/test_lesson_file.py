"""The lesson file parser (explorer/lesson_file.py): the bundled lesson, a good file, and one bad field at
a time, each refused with one line that names the step and the field."""
from __future__ import annotations

import os

import pytest

from explorer.lesson_file import FIELDS, TABS, LessonError, load_lesson, parse_lesson

GOOD = """<!-- a header
  ---
it may hold indented --- lines and anything else -->
---
title: Interpolation
tab: Interpolate
run: mnist-vae
# a comment
a: 1
b: 2
method: linear
t: 0.25
corrected: yes
samples: 16
---
Caption with $\\|z\\| \\approx \\sqrt{d}$.

Question: Which path?
Answer: Slerp,
because of the shell.
---
title: Second
tab: Samples
run: not-a-loaded-run
---
Only a caption.
Question: Q?
Answer: A.
"""


def test_a_good_file_gives_its_steps_and_settings():
    steps = parse_lesson(GOOD)
    assert [s.title for s in steps] == ["Interpolation", "Second"]
    first = steps[0]
    assert (first.tab, first.run) == ("Interpolate", "mnist-vae")
    assert first.settings == {"a": 1, "b": 2, "method": "linear", "t": 0.25, "corrected": True, "samples": 16}
    assert first.caption == "Caption with $\\|z\\| \\approx \\sqrt{d}$."
    assert first.question == "Which path?"
    assert first.answer == "Slerp,\nbecause of the shell."
    assert steps[1].run == "not-a-loaded-run" and steps[1].settings == {}   # unknown runs are not errors


def test_the_bundled_lesson_covers_the_topics(tmp_path):
    steps = load_lesson()
    assert 6 <= len(steps) <= 8
    text = " ".join(s.title + s.caption for s in steps).lower()
    for topic in ("autoencoder", "slerp", "kl", "β-tcvae", "mig", "smile", "codebook", "training"):
        assert topic in text, topic
    assert {"Samples", "Point", "Interpolate", "Disentangle", "Attributes", "Training"} <= {s.tab for s in steps}
    assert all(s.question and s.answer and "$" in s.caption for s in steps)


def _with(line: str, replace: str = "t: 0.25") -> str:
    return GOOD.replace(replace, line)


@pytest.mark.parametrize("bad, expected", [
    (_with("t: 1.5"), "step 1 ('Interpolation'): field 't': 1.5 is not between 0 and 1"),
    (_with("t: nan"), "field 't': nan is not between 0 and 1"),
    (_with("t: half"), "field 't': 'half' is not a number"),
    (_with("a: -1", "a: 1"), "field 'a': -1 is not between 0"),
    (_with("a: 1.5", "a: 1"), "field 'a': '1.5' is not a whole number"),
    (_with("method: cubic", "method: linear"), "field 'method': 'cubic' is not one of linear, slerp"),
    (_with("corrected: maybe", "corrected: yes"), "field 'corrected': 'maybe' is not true or false"),
    (_with("samples: 10", "samples: 16"), "field 'samples': '10' is not one of 4, 9, 16"),
    (_with("tab: Maps", "tab: Interpolate"), "field 'tab': 'Maps' is not one of Lesson, Point"),
    (_with("frames: 40"), "field 'frames': 40 is not between 3 and 16"),
    (_with("strength: 9"), "field 'strength': 9 is not between -4 and 4"),
    (_with("colour:"), "field 'colour': is empty"),
    (_with("colour digit"), "line 12: expected 'field: value', got 'colour digit'"),
    (_with("speed: 2"), "('Interpolation'): unknown field 'speed' (known: title, tab, run"),
    (_with("a: 3", "b: 2"), "field 'a' given twice"),
    (GOOD.replace("run: mnist-vae\n", ""), "step 1 ('Interpolation'): field 'run' is missing"),
    (GOOD.replace("title: Second\n", ""), "step 2: field 'title' is missing"),
    (GOOD.replace("Question: Which path?\n", ""), "step 1 ('Interpolation'): 'Answer:' comes before 'Question:'"),
    (GOOD.replace("Answer: A.\n", ""), "step 2 ('Second'): 'Answer:' is missing"),
    (GOOD.replace("Question: Q?", "Question:"), "step 2 ('Second'): 'Question:' is empty"),
    (GOOD.replace("Only a caption.\n", ""), "step 2 ('Second'): the caption is empty"),
    (GOOD.replace("Answer: A.", "Answer: A.\nAnswer: B."), "step 2 ('Second'): 'Answer:' given twice"),
    (GOOD + "---\ntitle: Third\n", "step 3: its front matter is not closed by a line '---'"),
    ("just text, no steps", "no steps"),
], ids=lambda v: str(v)[:40] if len(str(v)) < 80 else "lesson")
def test_each_bad_field_is_one_line_naming_step_and_field(bad, expected):
    assert bad != GOOD
    with pytest.raises(LessonError) as e:
        parse_lesson(bad, "my.md")
    message = str(e.value)
    assert "\n" not in message and message.startswith("my.md: ")
    assert expected in message, message


def test_every_field_and_tab_is_documented_in_the_bundled_file():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "explorer", "lessons",
                           "vae_lesson.md"), encoding="utf-8") as f:
        header = f.read().split("\n---\n", 1)[0]
    for name in FIELDS:
        assert f"  {name} " in header or f"{name}:" in header or f", {name}" in header or f" {name}  " in header, name
    for tab in TABS:
        assert tab in header, tab


def test_a_missing_or_binary_file_is_one_line(tmp_path):
    with pytest.raises(LessonError, match="no-such.md"):
        load_lesson(str(tmp_path / "no-such.md"))
    binary = tmp_path / "bin.md"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LessonError, match="not UTF-8 text"):
        load_lesson(str(binary))


def test_app_refuses_a_bad_lesson_file_with_one_line(tmp_path, monkeypatch, capsys):
    import app

    monkeypatch.setattr(app, "_torch_threads", lambda: 1)   # leave this process's torch threads alone
    bad = tmp_path / "bad.md"
    bad.write_text(GOOD.replace("t: 0.25", "t: 2"), encoding="utf-8")
    assert app.main(["--lesson", str(bad), "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: bad.md: step 1 ('Interpolation'): field 't': 2 is not between 0 and 1", err
