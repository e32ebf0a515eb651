"""What each label column of a dataset means: its display name, kind, value names or range and unit.

A dataset module describes its own labels (`LABELS` beside its loader); `training.data.describe_labels`
finds the description from the dataset's name alone, so that readers of a run folder (the explorer) can name
values without loading the data. Columns a dataset does not describe get a plain description from the
kinds stored with the latents.

Stored codes and shown values: dSprites stores factor class indices, so its descriptions carry the real
value of each class (`values`); the smileys store real values already; MNIST stores the digit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

KINDS = ("categorical", "binary", "continuous")


@dataclass(frozen=True)
class LabelInfo:
    """One label column.

    name:        the column's name in the label table (`label_names`)
    title:       how people call it ("x position")
    kind:        "categorical" (unordered classes), "binary" (0/1) or "continuous" (ordered values)
    value_names: categorical / binary: the name of stored code k (empty: the code itself)
    values:      the real value of stored code k, where the table stores class indices (empty: as stored)
    unit:        appended to continuous values ("°"); empty for none
    value_range: (low, high) of the real values, for the legend; None when unknown
    """
    name: str
    title: str
    kind: str
    value_names: tuple = ()
    values: tuple = ()
    unit: str = ""
    value_range: Optional[tuple] = None

    @property
    def is_categorical(self) -> bool:
        return self.kind in ("categorical", "binary")

    def real(self, code) -> np.ndarray:
        """Stored codes -> real values (float64 array)."""
        a = np.asarray(code, dtype=np.float64)
        if not self.values:
            return a
        table = np.asarray(self.values, dtype=np.float64)
        return table[np.clip(np.rint(a), 0, len(table) - 1).astype(np.int64)]

    def format(self, code) -> str:
        """One stored value as people read it: 'heart', '0.19', '92°'."""
        value = float(code)
        if self.is_categorical and self.value_names:
            k = int(round(value))
            if 0 <= k < len(self.value_names) and abs(value - k) < 1e-6:
                return self.value_names[k]
        if self.is_categorical and value.is_integer():
            return str(int(value))
        return self.format_real(float(self.real(value)))

    def format_real(self, real: float) -> str:
        """A real value (a mean, a range end) with two decimals at most and the unit: '0.19', '92°'."""
        if self.unit == "°":
            return f"{real:.0f}°"
        text = f"{real:.2f}".rstrip("0").rstrip(".")
        return ("0" if text == "-0" else text) + self.unit

    def describe_range(self) -> str:
        """'square / ellipse / heart' or '0.5 – 1' or ''."""
        if self.value_names:
            return " / ".join(self.value_names)
        if self.value_range is not None:
            low, high = self.value_range
            return f"{self.format_real(low)} – {self.format_real(high)}"
        return ""


def plain_label(name: str, kind: str) -> LabelInfo:
    """A label nobody described: its column name, its stored kind, values as stored."""
    kind = kind if kind in KINDS else "continuous"
    return LabelInfo(name, name, kind, value_names=("no", "yes") if kind == "binary" else ())
