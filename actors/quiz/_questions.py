"""Question sets: the built-in one shipped with the package, and a user's own JSON file.

The format (UTF-8 JSON)::

    {
      "title": "optional, any text",
      "questions": [
        {"prompt": "...", "answer": "the true answer", "decoy": "the robot's answer"},
        ...
      ]
    }
"""

from __future__ import annotations

import functools
import json
import json.decoder
import json.scanner
import os
import pathlib
from importlib import resources
from typing import Any

from .._errors import RuleViolation
from ._state import Question
from ._text import clean_answer, normalise

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PROMPT_CHARS",
    "QuestionFileError",
    "builtin_questions",
    "load_questions",
    "parse_questions",
]

#: largest question file accepted
MAX_FILE_BYTES = 2 * 1024 * 1024
#: longest prompt, in characters after trimming
MAX_PROMPT_CHARS = 300

_QUESTION_FIELDS = ("prompt", "answer", "decoy")
_TOP_FIELDS = ("title", "questions")


class QuestionFileError(ValueError):
    """A question file is unreadable or invalid (the file author's fault).

    ``source`` names the file, ``line`` is the 1-based line of the offending
    item (None when unknown), ``field`` its path like ``questions[3].decoy``.
    """

    def __init__(self, source: str, line: int | None, field: str, reason: str) -> None:
        where = source if line is None else f"{source}, line {line}"
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")
        self.source = source
        self.line = line
        self.field = field
        self.reason = reason


class _Located(dict):
    """A JSON object that remembers the line it starts on."""

    line: int = 0


def _decoder(text: str) -> json.JSONDecoder:
    """A pure-Python JSON decoder that tags each object with its line.

    Duplicate keys and NaN/Infinity are refused: both are mistakes in a
    hand-written file that ``json`` would accept silently.
    """

    def pairs(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return items

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        string, end = s_and_end
        items, new_end = json.decoder.JSONObject(
            (string, end), strict, scan_once, None, pairs, memo
        )
        obj = _Located()
        obj.line = string.count("\n", 0, end) + 1
        for key, value in items:
            if key in obj:
                raise json.JSONDecodeError(f"duplicate key {key!r}", string, end - 1)
            obj[key] = value
        return obj, new_end

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    decoder = json.JSONDecoder(parse_constant=no_constants)
    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    return decoder


def parse_questions(text: str, source: str = "<questions>") -> tuple[Question, ...]:
    """The questions in ``text`` (the JSON format above), cleaned and checked.

    Raises ``QuestionFileError`` with the line and field of the first problem.
    """
    try:
        data = _decoder(text).decode(text)
    except json.JSONDecodeError as exc:
        raise QuestionFileError(source, exc.lineno, "", f"not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise QuestionFileError(source, None, "", f"not valid JSON: {exc}") from None
    if not isinstance(data, _Located):
        raise QuestionFileError(source, 1, "", 'the file must hold an object {"questions": [...]}')
    unknown = sorted(set(data) - set(_TOP_FIELDS))
    if unknown:
        raise QuestionFileError(
            source, data.line, unknown[0], f"unknown field (allowed: {', '.join(_TOP_FIELDS)})"
        )
    if "title" in data and not isinstance(data["title"], str):
        raise QuestionFileError(source, data.line, "title", "must be a string")
    items = data.get("questions")
    if not isinstance(items, list) or not items:
        raise QuestionFileError(source, data.line, "questions", "must be a non-empty list")
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        field = f"questions[{index}]"
        if not isinstance(item, _Located):
            raise QuestionFileError(source, None, field, "must be an object")
        question = _question(item, field, source)
        key = normalise(question.prompt)
        if key in seen:
            raise QuestionFileError(
                source, item.line, f"{field}.prompt", f"same prompt as line {seen[key]}"
            )
        seen[key] = item.line
        questions.append(question)
    return tuple(questions)


def _question(item: _Located, field: str, source: str) -> Question:
    unknown = sorted(set(item) - set(_QUESTION_FIELDS))
    if unknown:
        raise QuestionFileError(
            source,
            item.line,
            f"{field}.{unknown[0]}",
            f"unknown field (allowed: {', '.join(_QUESTION_FIELDS)})",
        )
    for name in _QUESTION_FIELDS:
        if name not in item:
            raise QuestionFileError(source, item.line, f"{field}.{name}", "is missing")
    prompt = item["prompt"]
    if not isinstance(prompt, str):
        raise QuestionFileError(source, item.line, f"{field}.prompt", "must be a string")
    prompt = " ".join(prompt.split())
    if not prompt or len(prompt) > MAX_PROMPT_CHARS:
        raise QuestionFileError(
            source, item.line, f"{field}.prompt", f"must have 1 to {MAX_PROMPT_CHARS} characters"
        )
    texts = {}
    for name in ("answer", "decoy"):
        try:
            texts[name] = clean_answer(item[name], what=name)
        except RuleViolation as exc:
            raise QuestionFileError(source, item.line, f"{field}.{name}", str(exc)) from None
    if normalise(texts["answer"]) == normalise(texts["decoy"]):
        raise QuestionFileError(source, item.line, f"{field}.decoy", "is the same as the answer")
    return Question(prompt=prompt, answer=texts["answer"], decoy=texts["decoy"])


def load_questions(path: str | os.PathLike[str]) -> tuple[Question, ...]:
    """The questions of the JSON file at ``path``.

    Raises ``QuestionFileError`` when the file cannot be read, is larger than
    ``MAX_FILE_BYTES``, is not UTF-8, or does not follow the format.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise QuestionFileError(source, None, "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise QuestionFileError(source, None, "", f"larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise QuestionFileError(source, line, "", "not UTF-8 text") from None
    return parse_questions(text, source)


@functools.cache
def builtin_questions() -> tuple[Question, ...]:
    """The question set shipped in ``actors/questions/*.json`` (files in name order)."""
    try:
        folder: Any = resources.files("actors").joinpath("questions")
    except NotADirectoryError:
        # ``actors`` resolved as a namespace package (an editable install made
        # before the package had its __init__); the files are beside us on disk.
        folder = pathlib.Path(__file__).resolve().parent.parent / "questions"
    questions: list[Question] = []
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if item.name.endswith(".json"):
            questions.extend(
                parse_questions(item.read_text("utf-8"), f"actors/questions/{item.name}")
            )
    return tuple(questions)
