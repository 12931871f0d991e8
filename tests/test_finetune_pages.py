"""Fine-tuning on the pages under AppTest: Build offers "Replace the head for N classes" (above the canvas when
the output does not fit the dataset, and in the head's inspector), one click and one Undo; the Train form shows
the fine-tuning settings with their labels in "Start from other runs"."""

from __future__ import annotations

from tests.conftest import chain
from tests.test_build_page import browser, current, run, start
from tests.test_train_page import CFG, open_train_page, rerun

CNN5 = chain(("input", "Input", {"shape": [1, 8, 8]}), ("conv1", "Conv2d", {"out_channels": 4, "kernel_size": 3}),
             ("relu1", "ReLU", None), ("flat", "Flatten", None), ("fc", "Linear", {"out_features": 5}),
             ("out", "Identity", None), name="cnn5")


def test_build_replaces_the_head_for_the_datasets_classes_and_for_a_typed_number(_workspace):
    at = start(_workspace, CNN5)
    assert not [b for b in at.button if b.key == "studio.build.fit_head"]  # no dataset chosen: nothing offered
    at.session_state["studio.session.dataset_id"] = "digits"
    run(at)
    offer = at.button(key="studio.build.fit_head")
    assert offer.label == "Replace the head for 10 classes"
    shown = [w.value.replace("\\", "") for w in at.warning]  # markdown escapes undone
    assert any("The output (5,) does not fit" in t and "fc.out_features 5 → 10" in t for t in shown), shown
    offer.click()
    run(at)
    assert current(at).node("fc").params["out_features"] == 10
    assert not [b for b in at.button if b.key == "studio.build.fit_head"]  # it fits now
    at.button(key="studio.build.undo").click()
    run(at)
    assert current(at).node("fc").params["out_features"] == 5

    browser(at, selected="conv1")  # not the head: no offer in its inspector
    assert not [b for b in at.button if b.key == "studio.build.replace_head"]
    browser(at, selected="fc")
    assert any("Head of the model" in m.value for m in at.markdown)
    at.number_input(key="studio.build.head_classes.fc").set_value(3)
    run(at)
    button = at.button(key="studio.build.replace_head")
    assert button.label == "Replace the head for 3 classes"
    button.click()
    run(at)
    assert current(at).node("fc").params["out_features"] == 3
    at.button(key="studio.build.undo").click()
    run(at)
    assert current(at).node("fc").params["out_features"] == 5


def test_the_train_form_shows_the_fine_tuning_settings_with_labels(_workspace):
    at = open_train_page(_workspace, CNN5, dataset_id="digits")
    scale = at.number_input(key=f"{CFG}backbone_lr_scale")
    blocks = at.number_input(key=f"{CFG}train_last_blocks")
    assert scale.label == "Backbone LR multiplier" and scale.value == 1.0
    assert blocks.label == "Train only the last N blocks (-1 = all)" and blocks.value == -1
    blocks.set_value(0)
    rerun(at)
    shown = [c.value.replace("\\", "") for c in at.caption]  # markdown escapes undone
    assert "train_last_blocks=0 freezes 1 unit(s) (conv1) and trains fc (head: fc)" in shown, shown
