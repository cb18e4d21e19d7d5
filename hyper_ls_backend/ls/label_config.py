"""What a Label Studio project's labeling config means to the backend.

The backend never assumes the shipped configs: it reads the project's own config with the
SDK's ``LabelInterface`` and finds the prompt, the two responses and the control to
pre-fill, so Label Studio's own templates ("Human Preference collection for RLHF",
"Pairwise classification") and renamed fields (``$question``/``$answer1``/``$answer2``) and
reworded choices (``Response A``, ``A is much better``) work. The rules, in document order:

- text objects are ``<Text>``/``<HyperText>`` tags whose value is ``$key``;
- texts named like context (context, history, conversation, dialogue, system) are context;
- the control is a ``<Pairwise>`` over two texts (the first is A, "left"; it has no tie), or
  a single-answer ``<Choices>`` whose every choice reads as A, B or tie and that offers A
  and B (a tie is optional); one named like ``preference``/``overall`` wins over others;
- the prompt is the first text named like a prompt (prompt, question, instruction, query,
  input), else the first text that is not a response; a pair with no text left over has no
  prompt (the judge is told so);
- for ``<Choices>`` the responses are the texts besides the prompt. With exactly two, the
  first is A unless their names say otherwise (a/b, 1/2, left/right); with more, exactly one
  must be marked A and one B, and the others are context.

A config the backend cannot route (a ``<Ranker>`` over a list, a choice among three or more
responses, no preference control at all) raises :class:`LabelConfigError` whose message
names what is missing and which template or control would work.

Names are read both from the tag's ``name`` and its ``$key``, split into words
(``responseA`` -> response, a; ``answer_1`` -> answer, 1).

The same module turns a task into a :class:`Comparison` and a label into the result JSON
Label Studio stores, since both depend on what the config says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from label_studio_sdk._legacy.exceptions import LabelStudioXMLSyntaxErrorSentryIgnored
from label_studio_sdk.label_interface import LabelInterface
from label_studio_sdk.label_interface.control_tags import ChoicesTag, PairwiseTag, RankerTag
from pydantic import ValidationError

from hyper_ls_backend.core.comparison import Comparison, Label, Turn

_TEXT_TAGS = {"text", "hypertext"}
_PROMPT_WORDS = {"prompt", "question", "instruction", "instructions", "query", "input"}
_CONTEXT_WORDS = {"context", "history", "conversation", "dialogue", "dialog", "system"}
_CONTROL_WORDS = {"preference", "overall", "comparison"}
_SIDE_WORDS = {
    "a": Label.A,
    "1": Label.A,
    "left": Label.A,
    "first": Label.A,
    "one": Label.A,
    "b": Label.B,
    "2": Label.B,
    "right": Label.B,
    "second": Label.B,
    "two": Label.B,
}
_THIRD_WORDS = {"c", "3", "third", "three", "d", "4", "fourth", "four"}
"""Names of a third (or fourth) response: a choice among several, which is not a pair."""
_TIE_CHOICES = {
    "tie",
    "draw",
    "equal",
    "same",
    "equally good",
    "about the same",
    "both equal",
    "no preference",
    "neither is better",
}
_CHOICE = re.compile(
    r"(?:(?:response|answer|output|completion|model|option|candidate) )?(?P<side>[a-z0-9 ]+?)"
    r"(?: is)?(?: (?P<strength>clearly|much|far|significantly|slightly|somewhat|a bit"
    r"|a little|marginally))?(?: better)?"
)
_CLEAR_WORDS = {"clearly", "much", "far", "significantly"}
_PAIRWISE_SIDES = {"left": Label.A, "right": Label.B}

TEMPLATES_THAT_WORK = (
    'Label Studio\'s "Human Preference collection for RLHF" or "Pairwise classification" '
    "template (a <Pairwise> over two texts), or a <Choices> with choices for A, B and "
    "optionally Tie (the configs shipped with hyper-ls-backend)"
)


class LabelConfigError(ValueError):
    """A labeling config the backend cannot use; the message names what is missing."""


class Strength(StrEnum):
    """How much better the preferred response is, on scales that say so."""

    CLEAR = "clear"
    SLIGHT = "slight"


class ControlKind(StrEnum):
    """The control tag an answer is stored in."""

    CHOICES = "choices"
    PAIRWISE = "pairwise"


@dataclass(frozen=True)
class ChoiceOption:
    """One answer the control offers, and what it means.

    ``value`` is what Label Studio stores in results: a ``<Choice>``'s ``alias``, else its
    ``value``; ``left``/``right`` for ``<Pairwise>``. ``strength`` is None on scales without
    strength and for ties.
    """

    value: str
    label: Label
    strength: Strength | None


@dataclass(frozen=True)
class Answer:
    """A preference as a project's control states it: ``choice`` is the stored value."""

    choice: str
    label: Label
    strength: Strength | None


@dataclass(frozen=True)
class PreferenceConfig:
    """Where a project's tasks keep a comparison, and how its answers are written."""

    prompt_key: str | None
    """None for a pair without a prompt (the "Pairwise classification" template)."""
    response_a_key: str
    response_b_key: str
    context_keys: tuple[str, ...]
    control_name: str
    to_name: str
    options: tuple[ChoiceOption, ...]
    kind: ControlKind = ControlKind.CHOICES

    @property
    def has_tie(self) -> bool:
        """Whether a tie can be stored (``<Pairwise>`` and two-choice scales have none)."""
        return any(option.label is Label.TIE for option in self.options)

    @property
    def control(self) -> str:
        """The control as a user reads it in the config: ``<Pairwise name='comparison'>``."""
        return f"<{self.kind.value.capitalize()} name={self.control_name!r}>"

    def choice_for(self, label: Label, strength: Strength | None = None) -> str:
        """The choice that says ``label``, as close to ``strength`` as the scale allows.

        Without a strength (or one the scale lacks) a choice without strength is taken, then
        the slight one: a judge that gave no strength only claimed a preference. A ValueError
        for a tie on a control without one.
        """
        order = [strength, None, Strength.SLIGHT, Strength.CLEAR]
        candidates = [option for option in self.options if option.label == label]
        if not candidates:
            raise ValueError(f"{self.control} has no answer for {label.value}")
        return min(candidates, key=lambda option: order.index(option.strength)).value

    def read_answer(self, result: Sequence[Mapping[str, Any]]) -> Answer | None:
        """The preference an annotation's (or prediction's) ``result`` gives, if any: None
        when it does not answer this config's control, or answers with a choice the config
        no longer has (renamed since?)."""
        for region in result:
            if region.get("from_name") != self.control_name:
                continue
            value = region.get("value") or {}
            stored = value.get("selected") if self.kind is ControlKind.PAIRWISE else None
            if self.kind is ControlKind.CHOICES:
                stored = next(iter(value.get("choices") or []), None)
            if isinstance(stored, str):
                try:
                    label, strength = self.label_for(stored)
                except ValueError:
                    return None
                return Answer(stored, label, strength)
        return None

    def label_for(self, choice: str) -> tuple[Label, Strength | None]:
        """What an answer of this project's control means."""
        for option in self.options:
            if option.value == choice:
                return option.label, option.strength
        known = ", ".join(option.value for option in self.options)
        raise ValueError(f"{choice!r} is not an answer of {self.control} ({known})")


@dataclass(frozen=True)
class _TextField:
    name: str
    key: str

    @property
    def words(self) -> set[str]:
        return {*_words(self.name), *_words(self.key)}

    @property
    def side(self) -> Label | None:
        """A or B when the key's or name's last word says so (``answer1``, ``right``)."""
        for text in (self.key, self.name):
            words = _words(text)
            if words and words[-1] in _SIDE_WORDS:
                return _SIDE_WORDS[words[-1]]
        return None

    @property
    def third(self) -> bool:
        """Named like a third response (``resp3``, ``answer_c``)."""
        return any(set(_words(text)[-1:]) & _THIRD_WORDS for text in (self.key, self.name))

    def __str__(self) -> str:
        return f"{self.name} (${self.key})"


def parse_label_config(xml: str) -> PreferenceConfig:
    """Read a project's labeling config; raise :class:`LabelConfigError` if unusable."""
    try:
        interface = LabelInterface(xml)
    except (LabelStudioXMLSyntaxErrorSentryIgnored, ValueError) as error:
        raise LabelConfigError(f"the label config is not valid XML: {error}") from error

    texts: dict[str, _TextField] = {}
    for obj in interface.objects:
        if obj.tag.lower() in _TEXT_TAGS and obj.value_is_variable:
            texts.setdefault(obj.value_name, _TextField(obj.name, obj.value_name))
    fields = list(texts.values())
    controls = sorted(
        (c for c in interface.controls if isinstance(c, PairwiseTag | ChoicesTag)),
        key=lambda control: not set(_words(control.name)) & _CONTROL_WORDS,
    )
    if not controls:
        raise LabelConfigError(_no_control(interface))
    problems: dict[str, None] = {}  # ordered, once each: several controls may fail alike
    for control in controls:
        try:
            if isinstance(control, PairwiseTag):
                return _pairwise_config(control, fields)
            return _choices_config(control, fields)
        except LabelConfigError as error:
            problems[str(error)] = None
    raise LabelConfigError(
        "no usable preference control in the label config: "
        + "; ".join(problems)
        + f". Use {TEMPLATES_THAT_WORK}"
    )


def _no_control(interface: LabelInterface) -> str:
    ranker = next((c for c in interface.controls if isinstance(c, RankerTag)), None)
    if ranker is not None:
        return (
            f"<Ranker name={ranker.name!r}> ranks a list of responses, and the backend routes "
            "comparisons of two: it cannot pre-fill a ranking. Use " + TEMPLATES_THAT_WORK
        )
    found = ", ".join(sorted({f"<{c.tag}>" for c in interface.controls})) or "no control"
    return (
        f"the label config has no <Pairwise> or <Choices> to state a preference ({found} "
        f"found). Use {TEMPLATES_THAT_WORK}"
    )


def _pairwise_config(control: PairwiseTag, fields: list[_TextField]) -> PreferenceConfig:
    where = f"<Pairwise name={control.name!r}>"
    by_name = {field.name: field for field in fields}
    sides = [by_name.get(name) for name in control.to_name]
    if len(sides) != 2 or None in sides:
        raise LabelConfigError(
            f'{where} must point at two <Text value="$..."> (toName="{",".join(control.to_name)}")'
        )
    response_a, response_b = sides
    rest = [field for field in fields if field not in (response_a, response_b)]
    prompt, context = _prompt_and_context(rest)
    return _config(
        (prompt, response_a, response_b, context),
        control_name=control.name,
        to_name=control.name,  # a <Pairwise> result names the control itself
        options=tuple(ChoiceOption(side, label, None) for side, label in _PAIRWISE_SIDES.items()),
        kind=ControlKind.PAIRWISE,
    )


def _choices_config(control: ChoicesTag, fields: list[_TextField]) -> PreferenceConfig:
    texts = _assign_texts(fields)
    return _config(
        texts,
        control_name=control.name,
        to_name=control.to_name[0],
        options=_read_options(control, texts[1], texts[2]),
    )


def _config(
    texts: tuple[_TextField | None, _TextField, _TextField, list[_TextField]], **control: Any
) -> PreferenceConfig:
    """The config of (prompt, response A, response B, context) and a control's fields."""
    prompt, response_a, response_b, context = texts
    return PreferenceConfig(
        prompt_key=prompt.key if prompt else None,
        response_a_key=response_a.key,
        response_b_key=response_b.key,
        context_keys=tuple(field.key for field in context),
        **control,
    )


def _prompt_and_context(
    texts: list[_TextField],
) -> tuple[_TextField | None, list[_TextField]]:
    """The prompt among texts that are not responses (None if there is none), and the rest."""
    rest = [field for field in texts if not field.words & _CONTEXT_WORDS]
    prompt = next((field for field in rest if field.words & _PROMPT_WORDS), None) or next(
        iter(rest), None
    )
    return prompt, [field for field in texts if field != prompt]


def _assign_texts(
    texts: list[_TextField],
) -> tuple[_TextField | None, _TextField, _TextField, list[_TextField]]:
    """Split the text fields into prompt (None: a pair without one), response A, response B
    and context."""
    found = ", ".join(map(str, texts)) or "none"
    several = [field for field in texts if field.third]
    if several:
        raise LabelConfigError(
            f"the label config shows three or more responses ({', '.join(map(str, several))} "
            "besides A and B): the backend routes comparisons of two and cannot pre-fill a "
            "choice among more"
        )
    rest = [field for field in texts if not field.words & _CONTEXT_WORDS]
    prompt = next((field for field in rest if field.words & _PROMPT_WORDS), None) or next(
        (field for field in rest if field.side is None), None
    )
    responses = [field for field in rest if field != prompt]
    if len(responses) < 2:
        where = f"besides the prompt {prompt} " if prompt else ""
        raise LabelConfigError(
            f'the label config needs two response <Text value="$..."> {where}'
            f"(found {len(responses)}; texts found: {found})"
        )
    marked_a = [field for field in responses if field.side == Label.A]
    marked_b = [field for field in responses if field.side == Label.B]
    if len(responses) == 2:
        first, second = responses
        swapped = marked_a == [second] or marked_b == [first]
        response_a, response_b = (second, first) if swapped else (first, second)
    elif len(marked_a) == 1 and len(marked_b) == 1:
        response_a, response_b = marked_a[0], marked_b[0]
    else:
        candidates = ", ".join(map(str, responses))
        raise LabelConfigError(
            f"cannot tell which two texts are responses A and B among {candidates}: name "
            "exactly one like response_a/answer1/left and one like response_b/answer2/right"
        )
    context = [field for field in texts if field not in (prompt, response_a, response_b)]
    return prompt, response_a, response_b, context


def _read_options(
    control: ChoicesTag, response_a: _TextField, response_b: _TextField
) -> tuple[ChoiceOption, ...]:
    where = f"<Choices name={control.name!r}>"
    if control.is_multiple_choice:
        raise LabelConfigError(f'{where} allows several answers (choice="multiple")')
    values: list[str] = list(control.labels or [])
    if not values:
        raise LabelConfigError(f"{where} has no <Choice>")
    if any(_normalize(value) in _THIRD_WORDS for value in values):
        raise LabelConfigError(
            f"{where} chooses among three or more responses ({', '.join(values)}): the "
            "backend routes comparisons of two and cannot pre-fill such a choice"
        )
    sides = {
        **_SIDE_WORDS,
        **{_normalize(text): Label.A for text in (response_a.key, response_a.name)},
        **{_normalize(text): Label.B for text in (response_b.key, response_b.name)},
    }
    meanings = {value: _read_choice(value, sides) for value in values}
    unread = [value for value, meaning in meanings.items() if meaning is None]
    if unread:
        raise LabelConfigError(
            f"{where}: cannot read {', '.join(map(repr, unread))} as A, B or tie "
            "(expected e.g. A, Response B, Tie, A-is-slightly-better)"
        )
    options = tuple(ChoiceOption(value, *meaning) for value, meaning in meanings.items() if meaning)
    missing = [
        label.value for label in (Label.A, Label.B) if all(o.label != label for o in options)
    ]
    if missing:
        raise LabelConfigError(f"{where} has no choice for {', '.join(missing)}")
    return options


def _read_choice(value: str, sides: Mapping[str, Label]) -> tuple[Label, Strength | None] | None:
    text = _normalize(value)
    if text in _TIE_CHOICES:
        return Label.TIE, None
    match = _CHOICE.fullmatch(text)
    if match is None or match["side"] not in sides:
        return None
    strength = match["strength"]
    if strength is None:
        return sides[match["side"]], None
    return sides[match["side"]], Strength.CLEAR if strength in _CLEAR_WORDS else Strength.SLIGHT


def _normalize(text: str) -> str:
    """``A-is-clearly-better`` -> ``a is clearly better``."""
    return " ".join(re.split(r"[\s_\-]+", text.strip().lower())).strip()


def _words(name: str) -> list[str]:
    return [word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def task_to_comparison(task: Mapping[str, Any], config: PreferenceConfig) -> Comparison:
    """The comparison a Label Studio task holds; a ValueError names the field at fault.

    Context comes from ``data.context`` (turns shared by both sides, or a string),
    ``data.context_a``/``data.context_b`` (each side's own turns) and the config's extra text
    fields, which become turns whose role is their key.
    """
    task_id = task.get("id")
    if task_id is None:
        raise ValueError("the task has no id")
    data = task.get("data")
    if not isinstance(data, Mapping):
        raise ValueError(f"task {task_id}: 'data' is missing or not an object")

    prompt = ""
    if config.prompt_key is not None:
        prompt = _text(data, config.prompt_key, "the prompt", task_id)
        if not prompt.strip():
            raise ValueError(f"task {task_id}: data.{config.prompt_key} (the prompt) is empty")
    response_a = _text(data, config.response_a_key, "response A", task_id)
    response_b = _text(data, config.response_b_key, "response B", task_id)
    if not response_a.strip() and not response_b.strip():
        raise ValueError(
            f"task {task_id}: data.{config.response_a_key} and data.{config.response_b_key} "
            "(responses A and B) are both empty"
        )
    shared = _turns(data, "context", task_id)
    for key in config.context_keys:
        if key != "context":
            shared += _turns(data, key, task_id)
    tags = data.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise ValueError(f"task {task_id}: data.tags must be an object of tag: value")
    try:
        return Comparison(
            id=task_id,
            prompt=prompt,
            response_a=response_a,
            response_b=response_b,
            context_a=_turns(data, "context_a", task_id) if "context_a" in data else shared,
            context_b=_turns(data, "context_b", task_id) if "context_b" in data else shared,
            tags=tags,
            meta=data.get("meta") if isinstance(data.get("meta"), Mapping) else {},
        )
    except ValidationError as error:
        problems = "; ".join(_describe(problem, config) for problem in error.errors())
        raise ValueError(f"task {task_id}: {problems}") from error


def _describe(problem: Any, config: PreferenceConfig) -> str:
    """A pydantic error in terms of the task's data keys rather than Comparison's fields."""
    keys = {
        "prompt": config.prompt_key,
        "response_a": config.response_a_key,
        "response_b": config.response_b_key,
    }
    field = ".".join(str(part) for part in problem["loc"])
    return f"data.{keys.get(field, field)}: {problem['msg']}"


def _text(data: Mapping[str, Any], key: str, role: str, task_id: object) -> str:
    if key not in data:
        raise ValueError(f"task {task_id}: data.{key} ({role}) is missing")
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"task {task_id}: data.{key} ({role}) is {type(value).__name__}, not text")
    return value


def _turns(data: Mapping[str, Any], key: str, task_id: object) -> list[Turn]:
    """Turns from a list of ``{"role", "content"}``, or one turn from a non-empty string."""
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        return [Turn(role=key, content=value)]
    try:
        return [Turn.model_validate(turn) for turn in value]
    except (TypeError, ValidationError) as error:
        raise ValueError(
            f'task {task_id}: data.{key} must be text or a list of {{"role", "content"}}'
        ) from error


def prediction_result(
    config: PreferenceConfig, label: Label, strength: Strength | None = None
) -> list[dict[str, Any]]:
    """The ``result`` of a prediction or annotation that answers ``label`` (a ValueError
    for a tie on a control without one: see ``PreferenceConfig.has_tie``)."""
    choice = config.choice_for(label, strength)
    value = {"selected": choice} if config.kind is ControlKind.PAIRWISE else {"choices": [choice]}
    return [
        {
            "from_name": config.control_name,
            "to_name": config.to_name,
            "type": config.kind.value,
            "value": value,
        }
    ]
