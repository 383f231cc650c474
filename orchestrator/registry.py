"""The task registry: the allow-list of what a manifest may ask a worker to run.

Task code lives in `workers/tasks/<category>.py`; a function there decorated with
`@task` is registered as `<category>.<function>`. The registry is built by importing
those modules only — a manifest's text never decides what gets imported. A task is an
`async def` (run on the worker's event loop) or a plain `def` (run off it, by the
worker's executor: `worker/executors.py`).

It stays one module over 300 lines because checking a job's arguments against a task's
signature (`TaskDef.signature_problem`, `TypeCheck`) is what a registered task is for.
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar, cast

import orjson
from pydantic import PydanticUserError, TypeAdapter, ValidationError

from orchestrator.errors import UnknownTaskError

TASKS_PACKAGE = "workers.tasks"
TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
MAX_TASK_NAME = 200  # characters: a name is part of Redis keys and of every log line
TASK_MARK = "__orchestrator_task__"

TaskFunction = Callable[..., Any]  # an async function, or a plain one
F = TypeVar("F", bound=TaskFunction)
# A call shape bound to the signature: the arity problem, or each value's place (an
# index into args, or a key of kwargs), its name for messages and its type check.
Binding = str | tuple[tuple[int | str, str, "TypeCheck"], ...]
# A quick test of a value against an annotation: True only when it surely fits.
Fit = Callable[[Any], bool]
_MAX_SHAPES = 1024  # call shapes remembered per task: enough for any real manifest
_SHOWN = 40  # characters of a refused value quoted in its message
_STR = frozenset({str})
_LIST = frozenset({list})


def task(function: F | None = None, *, name: str | None = None) -> Any:
    """Mark a function as a task; `@task` or `@task(name="image.resize")`.

    An `async def` runs on the worker's event loop; a plain `def` never does: it runs
    in one of the worker's child processes (or threads, with `executor = "thread"`)."""

    def mark(fn: F) -> F:
        if not callable(fn) or inspect.isclass(fn):
            raise TypeError(f"task {fn!r} must be a function")
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(f"task {fn.__qualname__} must return its result, not yield it")
        category = fn.__module__.rsplit(".", 1)[-1]
        task_name = name or f"{category}.{fn.__name__}"
        if not TASK_NAME.match(task_name):
            raise ValueError(f"invalid task name {task_name!r}: use lower_case.dotted_names")
        setattr(fn, TASK_MARK, task_name)
        return fn

    return mark(function) if function is not None else mark


def task_name_problem(name: str) -> str | None:
    """Why `name` can be no task's name, so that no worker will ever announce it (a
    payload naming it is not a job), or None."""
    if len(name) <= MAX_TASK_NAME and TASK_NAME.match(name):
        return None
    return f"{name[:100]!r} is not a task name (lower_case.dotted, e.g. system.echo)"


@dataclass(frozen=True)
class TaskDef:
    name: str
    function: TaskFunction
    # A task's own policy, where it has one (a Celery task's max_retries, time_limit, and
    # its failing at once on an exception): None and True mean the settings'.
    max_tries: int | None = None
    timeout: float | None = None
    retry_errors: bool = True
    _bindings: dict[tuple[int, tuple[str, ...]], Binding] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def is_async(self) -> bool:
        """Run on the event loop (an `async def`), or by the executor (a plain `def`)."""
        return inspect.iscoroutinefunction(self.function)

    def signature_problem(self, args: list[Any], kwargs: Mapping[str, Any]) -> str | None:
        """Why these arguments cannot call the task, or None when they can.

        The one check of a call, for dispatch and for workers alike: the arguments must
        bind to the signature, and each value must be a JSON form of its parameter's
        annotation as pydantic's strict mode reads JSON (an int where a float is
        annotated is fine, and a string for a Path, an enum or a date; no string is
        taken for a number, nor 1 for True), because the task receives the values as
        they are, not converted. Unannotated and `Any` parameters take anything, and so
        do classes no JSON value can be. Binding and validators are built once per
        call shape, so a million lines of a few shapes pay only for the type checks.
        """
        shape = (len(args), tuple(kwargs))
        binding = self._bindings.get(shape)
        if binding is None:
            if len(self._bindings) >= _MAX_SHAPES:  # **kwargs tasks: names without end
                self._bindings.clear()
            binding = self._bindings[shape] = self._bind(*shape)
        if isinstance(binding, str):
            return binding
        for where, label, check in binding:
            value = args[where] if isinstance(where, int) else kwargs[where]
            if type(value) in check.exact or check.fits(value):  # inlined: the hot path
                continue
            if (problem := check.problem(value)) is not None:
                return f"{self.name}: argument {label}{problem}"
        return None

    def _bind(self, count: int, names: tuple[str, ...]) -> Binding:
        signature, checks = _parameters(self.function)
        try:
            # Placeholders stand for the values: ints for positions, names for keywords.
            bound = signature.bind(*range(count), **{name: name for name in names})
        except TypeError as exc:
            return f"{self.name}: {exc}"
        plan: list[tuple[int | str, str, TypeCheck]] = []
        for name, placed in bound.arguments.items():
            check = checks.get(name)
            if check is None:
                continue
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                plan.extend((where, f"{name}.{n}", check) for n, where in enumerate(placed))
            elif kind is inspect.Parameter.VAR_KEYWORD:
                plan.extend((where, where, check) for where in placed)
            else:
                plan.append((placed, name, check))
        return tuple(plan)


class TaskRegistry(Mapping[str, TaskDef]):
    def __init__(self, tasks: Mapping[str, TaskDef]) -> None:
        self._tasks = dict(tasks)

    @classmethod
    def discover(cls, *packages: str) -> TaskRegistry:
        """Import every module of the tasks packages and collect their tasks (`task_discovery`)."""
        from orchestrator.task_discovery import discover

        tasks = discover(packages or (TASKS_PACKAGE,))
        return cls(tasks)

    def require(self, name: str) -> TaskDef:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(self.unknown_reason(name)) from None

    def unknown_reason(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._tasks, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown task {name!r} (not in the registry of workers/tasks){hint}"

    def __getitem__(self, name: str) -> TaskDef:
        return self._tasks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


@cache
def _parameters(function: TaskFunction) -> tuple[inspect.Signature, dict[str, TypeCheck]]:
    """The signature, and a check for each parameter whose annotation constrains it.

    Annotations that cannot be resolved at run time (names imported only for type
    checkers) leave the task with its arity checked only.
    """
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except (NameError, AttributeError, TypeError, SyntaxError):
        hints = {}
    checks = {
        name: check
        for name in signature.parameters
        if name in hints and (check := TypeCheck.of(hints[name])) is not None
    }
    return signature, checks


@dataclass(frozen=True)
class TypeCheck:
    """A strict check of values against one annotation, built once per parameter.

    Values of the `exact` types pass on one lookup, and values the quick `fits` test
    vouches for (lists and dicts of them) on a few: the common case of every line of a
    big manifest. pydantic's strict validator decides the rest and words the refusal.
    """

    exact: frozenset[type]
    fits: Fit
    adapter: TypeAdapter[Any]
    union: str  # the name of a union hint, which pydantic's errors do not locate well

    @classmethod
    def of(cls, hint: Any) -> TypeCheck | None:
        """The check of `hint`, or None when it takes anything (or nothing can check it)."""
        if hint is Any or hint is object:
            return None
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(hint)
        except (PydanticUserError, TypeError):  # a class no JSON value can be: no check
            return None
        return cls(_exact(hint), _fit(hint) or _nothing, adapter, _union_name(hint))

    def problem(self, value: Any) -> str | None:
        """`.<where inside the value>: <reason>` when it does not fit, else None."""
        if self.fits(value):
            return None
        try:
            try:  # as the JSON it came from: a string is fine for a Path, an enum, a date
                self.adapter.validate_json(orjson.dumps(value), strict=True)
            except orjson.JSONEncodeError:  # not JSON at all (a caller's Python value)
                self.adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            if self.union:  # its errors are one per member, located by member: say it whole
                return f": expected {self.union}, got {_shown(value)}"
            error = exc.errors(include_url=False)[0]
            where = "".join(f".{part}" for part in error["loc"])
            return f"{where}: {error['msg']}, got {_shown(error['input'])}"
        return None


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."


def _union_name(hint: Any) -> str:
    """`int | str` for a union of two or more types besides None, else ""."""
    if not (isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union):
        return ""
    members = typing.get_args(hint)
    if len([arg for arg in members if arg is not type(None)]) < 2:
        return ""  # `X | None`: pydantic locates its errors well
    return " | ".join(
        "None" if m is type(None) else getattr(m, "__name__", str(m).replace("typing.", ""))
        for m in members
    )


_SCALARS: dict[Any, frozenset[type]] = {
    str: frozenset({str}),
    int: frozenset({int}),
    float: frozenset({float, int}),  # PEP 484's numeric tower, as pydantic's strict mode
    bool: frozenset({bool}),
    None: frozenset({type(None)}),
    type(None): frozenset({type(None)}),
}


def _exact(hint: Any) -> frozenset[type]:
    """The types whose every value fits `hint` (its scalars, a list of anything, and
    unions of them): a value of one passes on a single lookup. Empty for other hints."""
    try:
        if hint in _SCALARS:
            return _SCALARS[hint]
    except TypeError:  # an unhashable hint is none of these
        return frozenset()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is list or (origin is list and (not args or args[0] is Any)):
        return _LIST
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        members = [_exact(arg) for arg in args]
        return frozenset().union(*members) if all(members) else frozenset()
    return frozenset()


def _anything(value: Any) -> bool:
    return True


def _nothing(value: Any) -> bool:
    return False


def _fit(hint: Any) -> Fit | None:
    """A quick test that is True only for values that surely fit `hint`, for the hints
    JSON values are checked against (scalars, lists, string-keyed dicts, unions of
    them); None for other hints. False means "ask pydantic", not "refused"."""
    if hint is Any or hint is object:
        return _anything
    if exact := _exact(hint):
        return lambda value: type(value) in exact
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        either = frozenset().union(*(_exact(arg) for arg in args))
        found = [_fit(arg) for arg in args if not _exact(arg)]
        if None in found:
            return None
        others = cast(list[Fit], found)
        if len(others) == 1:  # `list[str] | None` and the like
            (other,) = others
            return lambda value: type(value) in either or other(value)
        return lambda value: type(value) in either or any(fit(value) for fit in others)
    if origin is list:
        return _fit_list(args[0])
    if hint is dict or (origin is dict and (not args or args[0] is str)):
        values = _fit_list(args[1] if args else Any)
        if values is None:
            return None
        fit_values = values
        return lambda value: (
            type(value) is dict
            and _STR.issuperset(map(type, value))
            and fit_values(list(value.values()))
        )
    return None


def _fit_list(item: Any) -> Fit | None:
    """`_fit` of `list[item]`."""
    if item is Any or item is object:
        return lambda value: type(value) is list
    if allowed := _exact(item):  # one pass over the items' types
        return lambda value: type(value) is list and allowed.issuperset(map(type, value))
    each = _fit(item)
    if each is None:
        return None
    return lambda value: type(value) is list and all(map(each, value))


@cache
def task_registry(packages: tuple[str, ...] = (TASKS_PACKAGE,)) -> TaskRegistry:
    """The registry of the given task packages, built once per process."""
    return TaskRegistry.discover(*packages)


def default_registry() -> TaskRegistry:
    """The registry of the installed `workers.tasks` package."""
    return task_registry()
