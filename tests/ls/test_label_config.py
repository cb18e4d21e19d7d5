"""Reading labeling configs: no server needed."""

from __future__ import annotations

import pytest
from label_studio_sdk.label_interface import LabelInterface

from hyper_ls_backend.core.comparison import FIVE_POINT_SCALE, Label
from hyper_ls_backend.ls.label_config import (
    LabelConfigError,
    Strength,
    parse_label_config,
    prediction_result,
)
from ls.configs import SHIPPED, STANDARD_TEXTS, config


def test_shipped_5point_config_is_read_with_strengths() -> None:
    parsed = parse_label_config(SHIPPED["5point"])

    assert (parsed.prompt_key, parsed.response_a_key, parsed.response_b_key) == (
        "prompt",
        "response_a",
        "response_b",
    )
    assert (parsed.control_name, parsed.to_name, parsed.context_keys) == (
        "preference",
        "prompt",
        (),
    )
    assert [option.value for option in parsed.options] == list(FIVE_POINT_SCALE)
    assert parsed.label_for("A-is-clearly-better") == (Label.A, Strength.CLEAR)
    assert parsed.label_for("B-is-slightly-better") == (Label.B, Strength.SLIGHT)
    assert parsed.label_for("Tie") == (Label.TIE, None)


def test_shipped_3way_config_is_read_without_strengths() -> None:
    parsed = parse_label_config(SHIPPED["3way"])

    assert [(o.value, o.label, o.strength) for o in parsed.options] == [
        ("A", Label.A, None),
        ("B", Label.B, None),
        ("Tie", Label.TIE, None),
    ]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_choice_round_trips(name: str) -> None:
    parsed = parse_label_config(SHIPPED[name])

    for option in parsed.options:
        assert parsed.choice_for(*parsed.label_for(option.value)) == option.value


def test_renamed_fields_are_found_by_name_and_key() -> None:
    xml = config(
        '<Text name="q" value="$question"/>'
        '<Text name="first" value="$answer1"/>'
        '<Text name="second" value="$answer2"/>',
        "Answer 1",
        "Answer 2",
        "Tie",
        control="winner",
    )

    parsed = parse_label_config(xml)

    assert (parsed.prompt_key, parsed.response_a_key, parsed.response_b_key) == (
        "question",
        "answer1",
        "answer2",
    )
    assert (parsed.control_name, parsed.to_name) == ("winner", "q")
    assert parsed.choice_for(Label.B) == "Answer 2"


def test_side_markers_beat_document_order() -> None:
    xml = config(
        '<Text name="prompt" value="$prompt"/>'
        '<Text name="right" value="$right"/>'
        '<Text name="left" value="$left"/>',
        "left",
        "right",
        "tie",
    )

    parsed = parse_label_config(xml)

    assert (parsed.response_a_key, parsed.response_b_key) == ("left", "right")
    assert parsed.label_for("left") == (Label.A, None)


def test_prompt_is_found_by_name_even_when_not_first() -> None:
    xml = config(
        '<Text name="responseA" value="$responseA"/>'
        '<Text name="instruction" value="$instruction"/>'
        '<Text name="responseB" value="$responseB"/>',
        "A",
        "B",
        "Tie",
    )

    parsed = parse_label_config(xml)

    assert (parsed.prompt_key, parsed.response_a_key, parsed.response_b_key) == (
        "instruction",
        "responseA",
        "responseB",
    )


def test_extra_texts_are_context() -> None:
    xml = config(
        '<Text name="system" value="$system_prompt"/>'
        '<Text name="prompt" value="$prompt"/>'
        '<HyperText name="notes" value="$notes"/>'
        '<Text name="response_a" value="$response_a"/>'
        '<Text name="response_b" value="$response_b"/>',
        "A",
        "B",
        "Tie",
    )

    parsed = parse_label_config(xml)

    assert parsed.prompt_key == "prompt"
    assert (parsed.response_a_key, parsed.response_b_key) == ("response_a", "response_b")
    assert parsed.context_keys == ("system_prompt", "notes")


@pytest.mark.parametrize(
    ("choice", "label", "strength"),
    [
        ("a", Label.A, None),
        ("Response A", Label.A, None),
        ("RESPONSE_B", Label.B, None),
        ("response_a", Label.A, None),
        ("A is better", Label.A, None),
        ("A is much better", Label.A, Strength.CLEAR),
        ("b-is-slightly-better", Label.B, Strength.SLIGHT),
        ("B-IS-CLEARLY-BETTER", Label.B, Strength.CLEAR),
        ("Answer 2", Label.B, None),
        ("TIE", Label.TIE, None),
        ("Draw", Label.TIE, None),
        ("About the same", Label.TIE, None),
    ],
)
def test_choice_variants_are_read(choice: str, label: Label, strength: Strength | None) -> None:
    others = {Label.A: ["B", "Tie"], Label.B: ["A", "Tie"], Label.TIE: ["A", "B"]}[label]

    parsed = parse_label_config(config(STANDARD_TEXTS, choice, *others))

    assert parsed.label_for(choice) == (label, strength)


def test_choice_aliases_are_what_results_carry() -> None:
    xml = config(STANDARD_TEXTS, "Tie").replace(
        '<Choice value="Tie"/>',
        '<Choice value="Left is better" alias="A"/><Choice value="Right is better" alias="B"/>'
        '<Choice value="Tie"/>',
    )

    assert parse_label_config(xml).choice_for(Label.A) == "A"


def test_preference_control_wins_over_aspect_controls() -> None:
    aspect = '<Choices name="helpfulness" toName="prompt"><Choice value="A"/><Choice value="B"/>'
    aspect += '<Choice value="Tie"/></Choices>'
    xml = config(STANDARD_TEXTS, "A", "B", "Tie", control="overall_preference")
    xml = xml.replace("<Choices", aspect + "<Choices", 1)

    assert parse_label_config(xml).control_name == "overall_preference"


def test_unusable_choices_are_skipped_for_a_usable_one() -> None:
    safety = '<Choices name="safety" toName="prompt"><Choice value="Safe"/>'
    safety += '<Choice value="Unsafe"/></Choices>'
    xml = config(STANDARD_TEXTS, "A", "B", "Tie", control="verdict", extra=safety)

    assert parse_label_config(xml).control_name == "verdict"


def test_choice_for_falls_back_to_the_nearest_strength() -> None:
    five = parse_label_config(SHIPPED["5point"])
    three = parse_label_config(SHIPPED["3way"])

    assert five.choice_for(Label.A) == "A-is-slightly-better"
    assert five.choice_for(Label.TIE, Strength.CLEAR) == "Tie"
    assert three.choice_for(Label.B, Strength.CLEAR) == "B"


def test_unknown_choice_is_an_error() -> None:
    with pytest.raises(ValueError, match="'Maybe' is not an answer of <Choices name='preference'>"):
        parse_label_config(SHIPPED["3way"]).label_for("Maybe")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<View><Text name='prompt' value='$prompt'>", "not valid XML"),
        ("", "not valid XML"),
        (STANDARD_TEXTS.join(["<View>", "</View>"]), "has no <Pairwise> or <Choices>"),
        (
            config('<Text name="prompt" value="$prompt"/><Text name="r" value="$response"/>', "A"),
            "needs two response",
        ),
        (
            config(
                '<Text name="prompt" value="$prompt"/><Text name="x" value="$x"/>'
                '<Text name="y" value="$y"/><Text name="z" value="$z"/>',
                "A",
                "B",
                "Tie",
            ),
            "cannot tell which two texts are responses",
        ),
        (config(STANDARD_TEXTS, "A", "B", "Tie", "Both bad"), "cannot read 'Both bad'"),
        (config(STANDARD_TEXTS, "A", "Tie"), "has no choice for B"),
        (config(STANDARD_TEXTS, "Positive", "Negative"), "cannot read 'Positive', 'Negative'"),
        (
            config(STANDARD_TEXTS, "A", "B", "Tie").replace(
                "<Choices ", '<Choices choice="multiple" '
            ),
            "allows several answers",
        ),
        (
            '<View><Image name="prompt" value="$prompt"/><Image name="a" value="$a"/>'
            '<Image name="b" value="$b"/><Choices name="c" toName="prompt"><Choice value="A"/>'
            "</Choices></View>",
            "needs two response <Text",
        ),
    ],
)
def test_unusable_configs_say_what_is_missing(xml: str, message: str) -> None:
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


@pytest.mark.parametrize("name", sorted(SHIPPED))
@pytest.mark.parametrize("label", list(Label))
def test_prediction_result_passes_the_sdk_validator(name: str, label: Label) -> None:
    parsed = parse_label_config(SHIPPED[name])

    result = prediction_result(parsed, label, Strength.CLEAR)

    assert result == [
        {
            "from_name": "preference",
            "to_name": "prompt",
            "type": "choices",
            "value": {"choices": [parsed.choice_for(label, Strength.CLEAR)]},
        }
    ]
    assert (
        LabelInterface(SHIPPED[name]).validate_prediction({"result": result}, return_errors=True)
        == []
    )
