"""Input validation for the REST API, and the JSON Schema of every input, from one description.

Each path parameter, query parameter and body field is a :class:`Field`. The same object checks a
request (with a message that names the rule broken) and renders its JSON Schema for the OpenAPI
document, so what is documented and what is enforced cannot disagree.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .problems import Problem, field_error, invalid


class FieldError(ValueError):
    """A value breaks its field's rule; the message completes "<field>: ..."."""


_MISSING = object()
_INT_TEXT = re.compile(r"^[+-]?[0-9]{1,18}$")
# "...T10:00:00 02:00": a "+" of the offset that reached us unescaped in a URL (it means space).
_SPACED_OFFSET = re.compile(r"^(.*T.*) ([0-9]{2}(:?[0-9]{2})?)$")


@dataclass(frozen=True)
class Field:
    """One input value: its wire ``name`` (camelCase), Python ``key``, rules and documentation."""

    name: str
    key: str
    description: str
    required: bool = False
    nullable: bool = False
    default: Any = None

    def check(self, value: Any) -> Any:
        """The value as the handler wants it, or FieldError. ``value`` is never None here."""
        raise NotImplementedError

    def from_text(self, text: str) -> Any:
        """Convert a query or path string before ``check`` (only strings by default)."""
        return text

    def base_schema(self) -> dict:
        raise NotImplementedError

    def schema(self) -> dict:
        """This field's JSON Schema (OpenAPI 3.1 dialect)."""
        out = self.base_schema()
        if self.nullable:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        if self.default is not None:
            out["default"] = self.default
        return {"description": self.description, **out}

    def but(self, **changes) -> Field:
        """A copy with some attributes changed (required, nullable, description...)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Text(Field):
    """A string of ``min_length`` to ``max_length`` characters, optionally matching ``pattern``."""

    min_length: int = 1
    max_length: int = 256
    pattern: str | None = None
    pattern_hint: str = ""

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise FieldError("must be a string")
        if not self.min_length <= len(value) <= self.max_length:
            raise FieldError(f"must be {self.min_length} to {self.max_length} characters long")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise FieldError(f"must be {self.pattern_hint or 'of the pattern ' + self.pattern}")
        return value

    def base_schema(self) -> dict:
        out: dict[str, Any] = {"type": "string", "minLength": self.min_length, "maxLength": self.max_length}
        if self.pattern:
            out["pattern"] = f"^{self.pattern}$"
        return out


@dataclass(frozen=True)
class Integer(Field):
    """A JSON integer (never a boolean, float or string in a body) within [minimum, maximum]."""

    minimum: int | None = None
    maximum: int | None = None
    rule: str = ""  # how the message words the rule, e.g. "a positive integer"

    def from_text(self, text: str) -> Any:
        if not _INT_TEXT.match(text):
            raise FieldError(f"must be {self._rule()}")
        return int(text)

    def _rule(self) -> str:
        if self.rule:
            return self.rule
        if self.minimum is not None and self.maximum is not None:
            return f"an integer from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"an integer of at least {self.minimum}"
        return "an integer"

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"must be {self._rule()}")
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise FieldError(f"must be {self._rule()}")
        return value

    def base_schema(self) -> dict:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True)
class Choice(Field):
    """One of a fixed set of strings."""

    values: tuple[str, ...] = ()

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.values:
            raise FieldError(f"must be one of {', '.join(self.values)}")
        return value

    def base_schema(self) -> dict:
        return {"type": "string", "enum": list(self.values)}


@dataclass(frozen=True)
class Flag(Field):
    """A JSON boolean; in a query, ``true`` or ``false``."""

    def from_text(self, text: str) -> Any:
        if text not in ("true", "false"):
            raise FieldError("must be true or false")
        return text == "true"

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise FieldError("must be true or false")
        return value

    def base_schema(self) -> dict:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Uuid(Field):
    """A UUID in its canonical text form; returned lower-case."""

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise FieldError("must be a UUID string")
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise FieldError(f"must be a UUID such as {uuid.UUID(int=0x6C0F)}; got {value[:64]!r}") from None
        return str(parsed)

    def base_schema(self) -> dict:
        return {"type": "string", "format": "uuid"}


@dataclass(frozen=True)
class Timestamp(Field):
    """An ISO 8601 date-time; without an offset it is taken as UTC. Returned as an aware datetime."""

    def from_text(self, text: str) -> Any:
        return _SPACED_OFFSET.sub(r"\1+\2", text)

    def check(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise FieldError("must be an ISO 8601 date-time string")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise FieldError(
                f"must be an ISO 8601 date-time such as 2026-05-04T10:00:00Z; got {value[:64]!r}"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def base_schema(self) -> dict:
        return {"type": "string", "format": "date-time"}


@dataclass(frozen=True)
class StringMap(Field):
    """A JSON object of string keys to string (or null) values: free-form attributes."""

    max_entries: int = 100
    key_max: int = 64
    value_max: int = 1024

    def check(self, value: Any) -> dict[str, str | None]:
        if not isinstance(value, dict):
            raise FieldError("must be a JSON object of string keys to string or null values")
        if len(value) > self.max_entries:
            raise FieldError(f"must have at most {self.max_entries} entries")
        for key, item in value.items():
            if not 1 <= len(key) <= self.key_max:
                raise FieldError(f"keys must be 1 to {self.key_max} characters long; got {key[:80]!r}")
            if item is not None and not isinstance(item, str):
                raise FieldError(f"value of {key!r} must be a string or null")
            if isinstance(item, str) and len(item) > self.value_max:
                raise FieldError(f"value of {key!r} must be at most {self.value_max} characters long")
        return dict(value)

    def base_schema(self) -> dict:
        return {
            "type": "object",
            "maxProperties": self.max_entries,
            "propertyNames": {"minLength": 1, "maxLength": self.key_max},
            "additionalProperties": {"type": ["string", "null"], "maxLength": self.value_max},
        }


# -- bodies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """A JSON object request body. ``partial``: a PATCH, every field optional, at least one given."""

    schema_name: str
    description: str
    fields: tuple[Field, ...]
    partial: bool = False

    def schema(self) -> dict:
        """The body's JSON Schema: no field beyond those listed."""
        out: dict[str, Any] = {
            "type": "object",
            "description": self.description,
            "additionalProperties": False,
            "properties": {f.name: f.schema() for f in self.fields},
        }
        required = [f.name for f in self.fields if f.required and not self.partial]
        if required:
            out["required"] = required
        if self.partial:
            out["minProperties"] = 1
        return out

    def parse(self, raw: bytes) -> dict[str, Any]:
        """Decode and check a request body; the values by field ``key``. Problem when invalid."""
        if not raw.strip():
            raise invalid([field_error("body", "(body)", "a JSON object is required")])
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem("malformed-json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise invalid([field_error("body", "(body)", "must be a JSON object")])
        errors: list[dict] = []
        by_name = {f.name: f for f in self.fields}
        for name in data:
            if name not in by_name:
                errors.append(field_error("body", name, f"unknown field; allowed: {', '.join(by_name)}"))
        out: dict[str, Any] = {}
        for f in self.fields:
            value = data.get(f.name, _MISSING)
            if value is _MISSING:
                if f.required and not self.partial:
                    errors.append(field_error("body", f.name, "is required"))
                continue
            if value is None:
                if not f.nullable:
                    errors.append(field_error("body", f.name, "must not be null"))
                else:
                    out[f.key] = None
                continue
            try:
                out[f.key] = f.check(value)
            except FieldError as exc:
                errors.append(field_error("body", f.name, str(exc)))
        if not errors and self.partial and not data:
            errors.append(field_error("body", "(body)", "give at least one field to change"))
        if errors:
            raise invalid(errors)
        return out


# -- query and path parameters -----------------------------------------------------------------


def parse_params(fields: tuple[Field, ...], values: Mapping[str, str], where: str, *, strict: bool) -> dict:
    """Check query (``where="query"``) or path parameters; the values by field ``key``.

    ``values`` is a MultiDict for queries: a parameter given twice is an error, and with
    ``strict`` so is one the operation does not define (a typo would otherwise be ignored).
    """
    errors: list[dict] = []
    by_name = {f.name: f for f in fields}
    if strict:
        for name in dict.fromkeys(values):
            if name not in by_name:
                allowed = ", ".join(by_name) or "none"
                errors.append(field_error(where, name, f"unknown parameter; allowed: {allowed}"))
    out: dict[str, Any] = {}
    for f in fields:
        given = values.getall(f.name, []) if hasattr(values, "getall") else [values.get(f.name)]
        given = [g for g in given if g is not None]
        if len(given) > 1:
            errors.append(field_error(where, f.name, "must be given at most once"))
            continue
        if not given or given[0] == "":
            if f.required:
                errors.append(field_error(where, f.name, "is required"))
            else:
                out[f.key] = f.default
            continue
        try:
            out[f.key] = f.check(f.from_text(given[0]))
        except FieldError as exc:
            errors.append(field_error(where, f.name, str(exc)))
    if errors:
        raise invalid(errors)
    return out
