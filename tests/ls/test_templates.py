"""Every labeling template that ships with the Label Studio the tests run against (read from
its installed package): the two pairwise ones are routed, everything else is refused with a
reason that names what is missing and what would work."""

from __future__ import annotations

import json

import pytest
import yaml
from e2e.label_studio import LS_VENV
from label_studio_sdk.label_interface import LabelInterface
from processes import unavailable

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.ls.label_config import (
    TEMPLATES_THAT_WORK,
    ControlKind,
    LabelConfigError,
    PreferenceConfig,
    parse_label_config,
    prediction_result,
    task_to_comparison,
)

RLHF = "generative-ai/human-feedback-collection"
PAIRWISE = "ranking-and-scoring/pairwise-classification"
RESPONSE_SELECTION = "conversational-ai/response-selection"
RANKER = "generative-ai/llm-ranker"


def installed_templates() -> dict[str, str]:
    """Template path (``group/name``) -> config, from the Label Studio in ``.venv-ls``."""
    roots = sorted(LS_VENV.glob("lib/python3*/site-packages/label_studio/annotation_templates"))
    if not roots:
        unavailable(f"no Label Studio templates under {LS_VENV}: run `make label-studio`")
    root = roots[0]
    return {
        str(path.parent.relative_to(root)): yaml.safe_load(path.read_text())["config"]
        for path in sorted(root.glob("*/*/config.yml"))
    }


@pytest.fixture(scope="module")
def templates() -> dict[str, str]:
    return installed_templates()


def test_the_comparison_templates_are_there(templates):
    assert {RLHF, PAIRWISE, RESPONSE_SELECTION, RANKER} <= set(templates)
    assert len(templates) > 50


def test_every_template_is_routed_or_refused_with_what_would_work(templates):
    routed = {}
    for name, xml in templates.items():
        try:
            routed[name] = parse_label_config(xml)
        except LabelConfigError as error:
            assert TEMPLATES_THAT_WORK in str(error), name
    assert set(routed) == {RLHF, PAIRWISE}


def test_the_rlhf_template_is_a_pairwise_comparison_with_its_own_field_names(templates):
    config = parse_label_config(templates[RLHF])
    assert config.kind is ControlKind.PAIRWISE and not config.has_tie
    assert (config.prompt_key, config.response_a_key, config.response_b_key) == (
        "prompt",
        "answer1",
        "answer2",
    )
    assert (config.control_name, config.to_name) == ("comparison", "comparison")


def test_the_pairwise_classification_template_is_a_pair_without_prompt(templates):
    config = parse_label_config(templates[PAIRWISE])
    assert config.prompt_key is None
    assert (config.response_a_key, config.response_b_key) == ("pairText1", "pairText2")
    task = {"id": 3, "data": {"pairText1": "first text", "pairText2": "second text"}}
    comparison = task_to_comparison(task, config)
    assert (comparison.prompt, comparison.response_a) == ("", "first text")


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (RESPONSE_SELECTION, "three or more responses"),
        (RANKER, "<Ranker name='rank'> ranks a list of responses"),
    ],
)
def test_templates_of_three_or_more_responses_are_refused_with_a_reason(templates, name, says):
    with pytest.raises(LabelConfigError, match=says):
        parse_label_config(templates[name])


@pytest.mark.parametrize(("label", "side"), [(Label.A, "left"), (Label.B, "right")])
def test_a_pairwise_prefill_is_what_label_studio_stores_and_reads_back(templates, label, side):
    config: PreferenceConfig = parse_label_config(templates[RLHF])
    result = prediction_result(config, label)
    assert result == [
        {
            "from_name": "comparison",
            "to_name": "comparison",
            "type": "pairwise",
            "value": {"selected": side},
        }
    ]
    # The SDK's own region for the control (its validator disagrees with it and with the
    # editor, which store ``to_name`` = ``from_name``; the real server takes it: see e2e).
    region = json.loads(
        LabelInterface(templates[RLHF]).get_control("comparison").label(side).to_json()
    )
    assert result == [{key: region[key] for key in result[0]}]
    answer = config.read_answer(result)
    assert answer is not None and (answer.label, answer.choice) == (label, side)


def test_a_tie_cannot_be_written_to_a_pairwise_control(templates):
    with pytest.raises(ValueError, match="has no answer for tie"):
        prediction_result(parse_label_config(templates[RLHF]), Label.TIE)


def test_label_studios_own_example_annotation_reads_as_a_preference(templates):
    """The sample task that ships beside the pairwise-classification template (its
    ``config.xml`` carries a task with an annotation in a comment), read as Label Studio
    stores it."""
    roots = sorted(LS_VENV.glob("lib/python3*/site-packages/label_studio/annotation_templates"))
    xml = (roots[0] / PAIRWISE / "config.xml").read_text()
    sample = json.loads(xml.split("<!--", 1)[1].rsplit("-->", 1)[0])
    config = parse_label_config(xml)
    (annotation,) = sample["annotations"]
    answer = config.read_answer(annotation["result"])
    assert answer is not None and (answer.label, answer.choice) == (Label.A, "left")
    comparison = task_to_comparison({"id": 1, "data": sample["data"]}, config)
    assert comparison.response_a == sample["data"]["text1"]
