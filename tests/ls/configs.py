"""Labeling configs the tests use: the shipped ones, and helpers to write others."""

from __future__ import annotations

from hyper_ls_backend.ls import configs

SHIPPED = {
    "5point": configs.read("preference_5point"),
    "3way": configs.read("preference_3way"),
}


def config(texts: str, *choices: str, control: str = "preference", extra: str = "") -> str:
    """A config with the given object tags and one ``<Choices>`` pointing at the first text."""
    to_name = texts.split('name="', 1)[1].split('"', 1)[0]
    options = "".join(f'<Choice value="{choice}"/>' for choice in choices)
    return (
        f'<View>{texts}<Choices name="{control}" toName="{to_name}">{options}</Choices>'
        f"{extra}</View>"
    )


STANDARD_TEXTS = (
    '<Text name="prompt" value="$prompt"/>'
    '<Text name="response_a" value="$response_a"/>'
    '<Text name="response_b" value="$response_b"/>'
)
