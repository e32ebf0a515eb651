"""Attributes tab: an attribute vector (from attributes.json) added to the input point ★ at a chosen
strength, a strip over strengths, and the analogy A − B + ★."""
from __future__ import annotations

import html
import math

import gradio as gr
import numpy as np

from training.errors import UserError

from .. import figures, ui_decode
from .. import latent_ops as ops
from ..checks import number, user_errors
from ..runs import LoadedRun
from .events import HEAVY, LIVE, Page, Step, cleared_on_failure, pixel_image, private, then

STRIP_STRENGTHS = np.linspace(-3.0, 3.0, 5)  # five tiles >= 96 px fit one row of the tab


def checked_attribute(run: LoadedRun, attribute, corrected) -> tuple[np.ndarray, float]:
    """(vector, ROC-AUC) of an attribute named by an endpoint value (checked here)."""
    if not run.attribute_names:
        raise UserError(f"run {run.name!r} has no attribute vectors (export it with labels)")
    if not isinstance(attribute, str) or attribute not in run.attribute_names:
        raise UserError(f"unknown attribute {str(attribute)[:60]!r} "
                        f"(this run has: {', '.join(run.attribute_names)})")
    if corrected and not ops.has_corrected_vector(run, attribute):
        raise UserError(f"attribute {attribute!r} has no bias-corrected vector: no other label is correlated "
                        "with it, so there is nothing to balance against")
    return ops.attribute_vector(run, attribute, corrected=bool(corrected))


def attribute_markdown(run: LoadedRun, attribute: str, corrected: bool, auc: float) -> str:
    """How the vector was made, what it balances against and how well it separates, in words."""
    name = html.escape(attribute)
    if attribute in run.class_pairs:
        column, a, b = run.class_pairs[attribute]
        label = run.labels[column]
        labels = run.latents["labels"][:, column]
        low, high = html.escape(label.format(a)), html.escape(label.format(b))
        lines = [f"**{name}** vector = mean(μ | {high}) − mean(μ | {low})",
                 f"examples: {low} {int((labels == a).sum())}, {high} {int((labels == b).sum())}"]
        if math.isfinite(auc):
            lines.append(f"ROC-AUC of z·v telling {high} from {low}: **{auc:.3f}** (0.5 = no better than chance)")
        return "  \n".join(lines)
    entry = run.attributes["attributes"][attribute]
    label = next((info for info in run.labels if info.name == attribute), None)
    title = html.escape(label.title if label else attribute)
    if label is not None and label.kind == "binary":
        yes, no = (html.escape(label.format(v)) for v in (1, 0))
        lines = [f"**{name}** vector = mean(μ | {yes}) − mean(μ | {no})"]
    else:
        lines = [f"**{name}** vector = mean(μ | high {title}) − mean(μ | low {title})"]
    confounder = ops.confounder_of(run, attribute)
    if corrected and confounder:
        lines.append(f"bias-corrected: balanced against *{html.escape(confounder[0])}* (correlated "
                     f"{confounder[1]:+.2f} with {title} in the data), so that it does not add {html.escape(confounder[0])} too")
    elif confounder:
        lines.append(f"{title} is correlated {confounder[1]:+.2f} with *{html.escape(confounder[0])}* in the data: "
                     "tick “Bias-corrected” to balance it out")
    if math.isfinite(auc):
        lines.append(f"ROC-AUC of z·v as a classifier of {title}: **{auc:.3f}** (0.5 = no better than chance)")
    counts = [f"{k.replace('n_', '')} {entry[k]}" for k in ("n_pos", "n_neg") if k in entry]
    if counts:
        lines.append("examples: " + ", ".join(counts))
    return "  \n".join(lines)


def correction_choice(run: LoadedRun, attribute) -> gr.Checkbox:
    """The bias-correction box for an attribute: offered, and naming what it balances against, only where
    another label is correlated with it; otherwise unticked and greyed out, saying why."""
    confounder = ops.confounder_of(run, attribute) if attribute in run.attribute_names else None
    if confounder is None:
        return gr.Checkbox(value=False, interactive=False, label="Bias correction: no correlated label to balance")
    return gr.Checkbox(interactive=True, label=f"Bias-corrected (balanced against {confounder[0]})")


class AttributesTab:
    def __init__(self, page: Page):
        self.points = page.points

    def layout(self, page: Page) -> None:
        with gr.Row():
            page.attr_dd = gr.Dropdown([], label="Attribute", elem_id="attribute", allow_custom_value=True, scale=2)
            self.corrected = gr.Checkbox(False, label="Bias-corrected vector", elem_id="corrected", scale=1)
            page.attr_point = gr.Number(0, precision=0, minimum=-1, label="Input point ★",
                                        elem_id="attr-point", scale=1, min_width=100)
        self.strength = gr.Slider(-4.0, 4.0, value=1.5, step=0.05, label="Strength (drag: decodes live)",
                                  elem_id="strength")
        with gr.Row():
            self.input_image = pixel_image(label="Input", elem_id="attr-in", height=220)
            with gr.Column():
                self.output_image = pixel_image(label="Input + strength · vector", elem_id="attr-out", height=220)
                self.view = ui_decode.live_view("Input + strength · vector (in your browser)", "attr-out",
                                                ["strength"], elem_id="attr-live")
        self.info = gr.Markdown(elem_id="attr-info")
        self.button = gr.Button("Apply", elem_id="attr-btn")
        gr.Markdown("Strength −3, −1.5, 0, +1.5, +3:")
        self.strip = pixel_image(show_label=False, elem_id="attr-strip")
        gr.Markdown("#### Analogy: A − B + ★\n*“A is to B as ? is to ★”* — A and B from the "
                    "Interpolate tab, ★ the input point above.")
        self.analogy_button = gr.Button("Compute A − B + ★", elem_id="analogy-btn")
        gr.Markdown("Left to right: A, B, ★, A − B + ★")
        self.analogy_image = pixel_image(show_label=False, elem_id="analogy")

    def define_steps(self, page: Page) -> None:
        inputs = [page.run_dd, page.attr_dd, self.corrected, page.attr_point, self.strength, page.session]
        page.io.attribute = Step(self.attribute, inputs, [self.input_image, self.output_image, self.strip, self.info])
        page.io.attribute_edit = Step(self.attribute_edit, inputs, [self.output_image], live=True)
        page.io.attribute_recipe = Step(self.attribute_recipe, [page.run_dd, page.attr_dd, self.corrected,
                                                                page.attr_point, page.session],
                                        [self.view], live=True, hidden=True)
        page.io.recipes.append(page.io.attribute_recipe)
        # Chained after a run switch too: an analogy of the previous run's images must not stay on the page.
        page.io.analogy = Step(self.analogy, [page.run_dd, page.a, page.b, page.attr_point, page.session],
                               [self.analogy_image])

    def wire(self, page: Page) -> None:
        step, overlay, recipe = page.io.attribute, page.io.overlay, page.io.attribute_recipe
        def follow(dep):
            # A refused edit (one error message) clears its pictures and the live view instead of leaving
            # the previous input's.
            then(dep.success(**recipe.io(), **LIVE, **private(), show_progress="hidden"), overlay)
            cleared_on_failure(dep, [*step.outputs, self.view],
                               lambda: (None, None, None, "", ui_decode.no_recipe()))

        # The box says what it balances against before the vector is drawn (a run switch sets the attribute too).
        page.attr_dd.change(self.correction, [page.run_dd, page.attr_dd], [self.corrected], **LIVE, **private(),
                            show_progress="hidden")
        correction = Step(self.correction, [page.run_dd, page.attr_dd], [self.corrected], live=True, hidden=True)
        follow(then(page.set_input.click(None, [page.point], [page.attr_point], js="(p) => p"), step))
        follow(self.button.click(**step.io(), api_name="attribute", **HEAVY))
        follow(then(page.attr_dd.input(**correction.io(), **LIVE, **private(), show_progress="hidden"), step))
        for listener in (self.corrected.input, page.attr_point.submit):
            follow(listener(**step.io(), **HEAVY, **private()))
        # The slider decodes in the browser; the view sends `server_frame` per move only where it cannot.
        self.view.server_frame(**page.io.attribute_edit.io(), api_name="attribute_edit", trigger_mode="always_last",
                               show_progress="hidden", **LIVE)
        self.analogy_button.click(**page.io.analogy.io(), api_name="analogy", **HEAVY)

    # ---- handlers ---------------------------------------------------------------------------------------
    def correction(self, name: str, attribute):
        try:
            return correction_choice(self.points.run(name), attribute)
        except UserError:
            return gr.Checkbox(value=False, interactive=False)

    def _edited(self, name, attribute, corrected, point, strength, session):
        run = self.points.run(name)
        v, auc = checked_attribute(run, attribute, corrected)
        strength = number(strength, "strength", -10.0, 10.0)
        z = self.points.latent_of(run, point, session, "attribute input")
        return run, v, auc, z, ops.decode(run, ops.apply_attribute(z, v, strength))[0]

    @user_errors
    def attribute(self, name: str, attribute, corrected, point, strength, session):
        """Input, input + strength·vector, a strip over strengths −3…+3, and the vector's ROC-AUC."""
        run, v, auc, z, edited = self._edited(name, attribute, corrected, point, strength, session)
        strip = ops.decode(run, np.stack([ops.apply_attribute(z, v, s) for s in STRIP_STRENGTHS]))
        return (figures.show(self.points.image_of(run, point, session)), figures.show(edited),
                figures.strip(strip), attribute_markdown(run, attribute, bool(corrected), auc))

    def attribute_recipe(self, name: str, attribute, corrected, point, session) -> dict:
        """What the browser needs to decode any strength: the input's latent and the vector."""
        try:
            run = self.points.run(name)
            v, _ = checked_attribute(run, attribute, corrected)
            z = self.points.latent_of(run, point, session, "attribute input")
        except UserError:
            return ui_decode.no_recipe()   # the server path says what is wrong
        return ui_decode.recipe(run, "attribute", z=ui_decode.floats(z), v=ui_decode.floats(v))

    @user_errors
    def attribute_edit(self, name: str, attribute, corrected, point, strength, session):
        """Only the edited image (the live strength slider)."""
        return figures.show(self._edited(name, attribute, corrected, point, strength, session)[-1])

    @user_errors
    def analogy(self, name: str, a, b, c, session):
        """A − B + C: decoded A, B, C and the result, side by side."""
        run = self.points.run(name)
        za, zb, zc = (self.points.latent_of(run, p, session, what) for p, what in ((a, "A"), (b, "B"), (c, "C")))
        images = ops.decode(run, np.stack([za, zb, zc, ops.analogy(za, zb, zc)]))
        return figures.grid(images, nrow=4)
