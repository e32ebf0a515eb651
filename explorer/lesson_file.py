"""The lesson file: the steps of the Lesson tab, in a Markdown file a teacher edits without Python.

Format (the bundled `lessons/vae_lesson.md` starts with the same description): anything before the first
line that is exactly `---` (not indented) is a header and is ignored. Each step is a front-matter block
between two `---` lines, `field: value` per line (blank lines and lines starting with `#` are skipped), followed by its
body: the caption (Markdown, `$...$` / `$$...$$` for LaTeX), then a line starting with `Question:` and a
line starting with `Answer:`, each followed by its text. A `---` line always starts the next step, so a
body cannot contain one.

Fields (`title`, `tab` and `run` are required; the others are applied only when given):
  title, tab (a tab label of the page), run, compare (a run or `none`), colour (a map colouring: a label
  name, `split` or a latent dimension `z3`), point, a, b, star (point numbers), method, t, frames,
  attribute, corrected, strength, temperature, seed, samples, span.
A run that is not loaded is not an error: the step says so when it is set up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from training.errors import UserError

DEFAULT_LESSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lessons", "vae_lesson.md")

# The page's tabs, by the label a lesson names them with, and their ids (explorer/ui.py uses the same).
TABS = {"Lesson": "tab-lesson", "Point": "tab-point", "Reconstruct": "tab-recon", "Samples": "tab-samples",
        "Interpolate": "tab-interp", "Attributes": "tab-attr", "Disentangle": "tab-dis",
        "Training": "tab-train", "Downloads": "tab-dl"}
METHODS = ("linear", "slerp")            # explorer.latent_ops.INTERPOLATORS
SAMPLE_COUNTS = (4, 9, 16, 25, 36, 49, 64)  # the Samples tab's choices
MAX_POINT = 10 ** 7


class LessonError(UserError):
    """A lesson file that cannot be used; the message names the file, the step and the field."""


@dataclass
class LessonStep:
    title: str
    tab: str
    run: str
    caption: str
    question: str
    answer: str
    settings: dict = field(default_factory=dict)   # the optional fields that were given, checked

    def get(self, name: str, default: Any = None) -> Any:
        return self.settings.get(name, default)


def _text(value: str) -> str:
    if not value:
        raise ValueError("is empty")
    return value


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not low <= n <= high:
            raise ValueError(f"{n} is not between {low} and {high}")
        return n
    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not low <= x <= high:  # also refuses nan
            raise ValueError(f"{value} is not between {low:g} and {high:g}")
        return x
    return parse


def _one_of(options) -> Callable[[str], Any]:
    def parse(value: str):
        for option in options:
            if value == str(option):
                return option
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, options))}")
    return parse


def _yes_no(value: str) -> bool:
    if value.lower() in ("true", "yes"):
        return True
    if value.lower() in ("false", "no"):
        return False
    raise ValueError(f"{value!r} is not true or false")


# Field -> parser of its text. Ranges are those of the page's controls.
FIELDS: dict[str, Callable[[str], Any]] = {
    "title": _text, "tab": _one_of(tuple(TABS)), "run": _text,
    "compare": _text, "colour": _text,
    "point": _whole(0, MAX_POINT), "a": _whole(0, MAX_POINT), "b": _whole(0, MAX_POINT),
    "star": _whole(0, MAX_POINT),
    "method": _one_of(METHODS), "t": _number(0.0, 1.0), "frames": _whole(3, 16),
    "attribute": _text, "corrected": _yes_no, "strength": _number(-4.0, 4.0),
    "temperature": _number(0.1, 2.0), "seed": _whole(0, 2 ** 31 - 1), "samples": _one_of(SAMPLE_COUNTS),
    "span": _number(1.0, 4.0),
}
REQUIRED = ("title", "tab", "run")


def parse_lesson(text: str, source: str = "lesson") -> list[LessonStep]:
    """The steps of a lesson file's text; LessonError (one line, naming the step and field) otherwise."""
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if line.rstrip() == "---"]
    if not marks:
        raise LessonError(f"{source}: no steps (a step starts with a line '---')")
    steps = []
    for n, k in enumerate(range(0, len(marks), 2), start=1):
        if k + 1 >= len(marks):
            raise LessonError(f"{source}: step {n}: its front matter is not closed by a line '---'")
        start, end = marks[k], marks[k + 1]
        body_end = marks[k + 2] if k + 2 < len(marks) else len(lines)
        steps.append(_step(lines[start + 1:end], lines[end + 1:body_end], f"{source}: step {n}", start + 1))
    return steps


def _step(head: list[str], body: list[str], where: str, first_line: int) -> LessonStep:
    values: dict[str, Any] = {}
    # The title names the step in every error, also in errors of the fields above it.
    titles = [line.partition(":")[2].strip() for line in head if line.strip().lower().startswith("title:")]
    if titles and titles[0]:
        where = f"{where} ({titles[0][:40]!r})"
    for offset, raw in enumerate(head, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            raise LessonError(f"{where}: line {first_line + offset}: expected 'field: value', got {line[:60]!r}")
        if key not in FIELDS:
            raise LessonError(f"{where}: unknown field {key!r} (known: {', '.join(FIELDS)})")
        if key in values:
            raise LessonError(f"{where}: field {key!r} given twice")
        try:
            values[key] = FIELDS[key](value.strip())
        except ValueError as e:
            raise LessonError(f"{where}: field {key!r}: {e}") from None
    for key in REQUIRED:
        if key not in values:
            raise LessonError(f"{where}: field {key!r} is missing")
    caption, question, answer = _body(body, where)
    settings = {k: v for k, v in values.items() if k not in REQUIRED}
    return LessonStep(values["title"], values["tab"], values["run"], caption, question, answer, settings)


def _body(body: list[str], where: str) -> tuple[str, str, str]:
    """(caption, question, answer) of a step's body."""
    parts: dict[str, list[str]] = {"caption": []}
    current = "caption"
    for line in body:
        for name in ("Question", "Answer"):
            if line.startswith(name + ":"):
                current = name.lower()
                if current in parts:
                    raise LessonError(f"{where}: '{name}:' given twice")
                if current == "answer" and "question" not in parts:
                    raise LessonError(f"{where}: 'Answer:' comes before 'Question:'")
                parts[current] = []
                line = line[len(name) + 1:]
                break
        parts[current].append(line)
    out = {name: "\n".join(text).strip() for name, text in parts.items()}
    for name in ("caption", "question", "answer"):
        if not out.get(name):
            label = "the caption" if name == "caption" else f"'{name.capitalize()}:'"
            raise LessonError(f"{where}: {label} is {'empty' if name in out else 'missing'}")
    return out["caption"], out["question"], out["answer"]


def load_lesson(path: Optional[str] = None) -> list[LessonStep]:
    """The steps of a lesson file (default: the bundled lesson)."""
    path = path or DEFAULT_LESSON
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1_000_001)
    except OSError as e:
        raise LessonError(f"lesson file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LessonError(f"lesson file {path}: not UTF-8 text") from None
    if len(text) > 1_000_000:
        raise LessonError(f"lesson file {path}: larger than 1 MB")
    return parse_lesson(text, os.path.basename(path))
