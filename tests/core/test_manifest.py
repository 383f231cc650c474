from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from orchestrator.errors import ManifestError, UserError
from orchestrator.job import spec
from orchestrator.manifest import ManifestWriter, get_next_filename, read_manifest
from orchestrator.registry import default_registry

REGISTRY = default_registry()


def write(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines))
    return path


def test_next_filename_counts_up_and_never_reuses(tmp_path: Path) -> None:
    first = get_next_filename("system_test", "debug", tmp_path)
    second = get_next_filename("system_test", "debug", tmp_path)
    other_mode = get_next_filename("system_test", "crud", tmp_path)
    assert [first.name, second.name, other_mode.name] == [
        "system_test_debug_01.jsonl",
        "system_test_debug_02.jsonl",
        "system_test_crud_01.jsonl",
    ]


def test_next_filename_grows_past_99(tmp_path: Path) -> None:
    (tmp_path / "wf_m_99.jsonl").touch()
    assert get_next_filename("wf", "m", tmp_path).name == "wf_m_100.jsonl"
    assert get_next_filename("wf", "m", tmp_path).name == "wf_m_101.jsonl"


def test_next_filename_is_safe_when_planners_race(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(pool.map(lambda _: get_next_filename("wf", "m", tmp_path).name, range(40)))
    assert len(set(names)) == 40


def test_next_filename_rejects_names_that_would_not_parse_back(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="invalid mode name"):
        get_next_filename("wf", "../escape", tmp_path)


def test_writer_replaces_reservation_only_on_success(tmp_path: Path) -> None:
    path = get_next_filename("wf", "m", tmp_path)
    with ManifestWriter(path, REGISTRY) as writer:
        writer.write(spec("system.echo", "a", meta={"index": 0}))
        writer.write(spec("system.sleep", 1.5))
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines == [
        {"task": "system.echo", "args": ["a"], "meta": {"index": 0}},
        {"task": "system.sleep", "args": [1.5]},
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wf_m_01.jsonl"]


def test_writer_leaves_nothing_when_a_planned_task_is_unknown(tmp_path: Path) -> None:
    path = get_next_filename("wf", "m", tmp_path)

    def plan_with_a_typo() -> None:
        with ManifestWriter(path, REGISTRY) as writer:
            writer.write(spec("system.echo", "fine"))
            writer.write(spec("system.slep", 1))

    with pytest.raises(ManifestError, match=r"job 2\): task: unknown task 'system.slep'"):
        plan_with_a_typo()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_an_empty_plan(tmp_path: Path) -> None:
    path = get_next_filename("wf", "m", tmp_path)
    with pytest.raises(UserError, match="no jobs"), ManifestWriter(path, REGISTRY):
        pass
    assert list(tmp_path.iterdir()) == []


def test_reader_derives_ids_and_counts_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl",
        '{"task": "system.echo", "args": [1]}',
        "",
        '{"task": "system.echo", "args": [2], "id": "custom-7", "meta": {"owner": "ana"}}',
        '{"task": "system.echo", "args": [3]}',
    )
    lines = list(read_manifest(path, REGISTRY, "m", 1024))
    assert [(x.number, x.job_id) for x in lines] == [(1, "m:1"), (3, "custom-7"), (4, "m:4")]
    assert lines[1].spec["meta"] == {"owner": "ana"}  # free fields kept as they are


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"task": "system.echo", "args": [1]', "m.jsonl:1: json: invalid JSON"),
        ('["system.echo", 1]', "m.jsonl:1: line: Input should be an object"),
        ('{"args": [1]}', "m.jsonl:1: task: Field required"),
        ('{"task": "system.echo"}', "m.jsonl:1: args: Field required"),
        ('{"task": "system.echo", "args": "x"}', "m.jsonl:1: args: Input should be a valid array"),
        ('{"task": 5, "args": []}', "m.jsonl:1: task: Input should be a valid string"),
        ('{"task": "system.echo", "args": [], "meta": {"max_tries": 0}}', "meta.max_tries"),
        (
            '{"task": "system.echo", "args": [], "id": "has space"}',
            "m.jsonl:1: id: String should match",
        ),
        ('{"task": "system.echo", "args": [], "prio": 1}', "m.jsonl:1: prio: unknown field"),
        (
            '{"task": "os.system", "args": ["rm -rf /"]}',
            "m.jsonl:1: task: unknown task 'os.system'",
        ),
        ('{"task": "system.sleep", "args": [1, 2]}', "m.jsonl:1: args: system.sleep: too many"),
        ('{"task": "system.crud", "args": ["k"], "kwargs": {"colour": 1}}', "m.jsonl:1: args:"),
        ('{"task": "system.echo", "args": [], "id": "m:9"}', "form reserved for derived ids"),
    ],
)
def test_reader_names_file_line_and_field(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "m.jsonl", content)
    with pytest.raises(ManifestError) as caught:
        list(read_manifest(path, REGISTRY, "m", 4096))
    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"{path}:1: ")


def test_reader_rejects_a_repeated_id(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl",
        '{"task": "system.echo", "args": [], "id": "a"}',
        '{"task": "system.echo", "args": [], "id": "a"}',
    )
    with pytest.raises(ManifestError, match=r"m.jsonl:2: id: 'a' repeats the id of line 1"):
        list(read_manifest(path, REGISTRY, "m", 4096))


def test_reader_stops_reading_an_overlong_line_at_the_limit(tmp_path: Path) -> None:
    fits = '{"task": "system.echo", "args": ["' + "x" * 50 + '"]}'
    path = write(
        tmp_path / "m.jsonl", fits, '{"task": "system.echo", "args": ["' + "y" * 10_000 + '"]}'
    )
    with pytest.raises(ManifestError, match=r"m.jsonl:2: line: longer than the limit of 100 bytes"):
        list(read_manifest(path, REGISTRY, "m", max_line_bytes=100))


def test_reader_accepts_a_line_exactly_at_the_limit_without_final_newline(tmp_path: Path) -> None:
    line = b'{"task": "system.echo", "args": []}'
    path = tmp_path / "m.jsonl"
    path.write_bytes(line)
    assert len(list(read_manifest(path, REGISTRY, "m", max_line_bytes=len(line)))) == 1


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.jsonl", "missing.jsonl: no such file"),
        (lambda d: write(d / "empty.jsonl"), "empty.jsonl: the manifest holds no jobs"),
        (lambda d: write(d / "blank.jsonl", "", "  "), "blank.jsonl: the manifest holds no jobs"),
        (lambda d: d, "not a regular file"),
    ],
)
def test_reader_rejects_missing_and_empty_files(
    tmp_path: Path, make: object, expected: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(ManifestError, match=expected):
        list(read_manifest(path, REGISTRY, "m", 4096))


def test_reader_accepts_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    """A BOM (as Windows editors write it) before the first line is not part of it."""
    path = write(
        tmp_path / "m.jsonl",
        b'\xef\xbb\xbf{"task": "system.echo", "args": [1]}',
        '{"task": "system.echo", "args": [2]}',
    )
    lines = list(read_manifest(path, REGISTRY, "m", 4096))
    assert [(x.number, x.spec["args"]) for x in lines] == [(1, [1]), (2, [2])]
    assert lines[0].raw.startswith(b"{")


def test_reader_refuses_a_pool_that_is_not_configured(tmp_path: Path) -> None:
    """With the configured pools given, a `meta.pool` typo is refused with a suggestion."""
    path = write(
        tmp_path / "m.jsonl",
        '{"task": "system.echo", "args": [], "meta": {"pool": "cloud"}}',
        '{"task": "system.echo", "args": [], "meta": {"pool": "metl"}}',
    )
    with pytest.raises(ManifestError) as caught:
        list(read_manifest(path, REGISTRY, "m", 4096, pools=["metal", "cloud"]))
    assert caught.value.message == (
        f"{path}:2: meta.pool: 'metl' is not a configured pool (metal, cloud); "
        "did you mean 'metal'?"
    )


def test_reader_refuses_an_argument_of_another_type_than_annotated(tmp_path: Path) -> None:
    """`system.sleep("x")` binds, but `seconds: float` cannot take a string."""
    path = write(
        tmp_path / "m.jsonl",
        '{"task": "system.sleep", "args": [1]}',
        '{"task": "system.sleep", "args": ["x"]}',
    )
    with pytest.raises(ManifestError) as caught:
        list(read_manifest(path, REGISTRY, "m", 4096))
    assert caught.value.message == (
        f"{path}:2: args: system.sleep: argument seconds: Input should be a valid number, got 'x'"
    )


def test_writer_checks_argument_types_as_the_json_will_carry_them(tmp_path: Path) -> None:
    """A planner's tuple is a list once written, so it fits `list[...]`; a wrong type does not."""
    path = get_next_filename("wf", "m", tmp_path)
    fine = spec(
        "bible.create_missing_node", "b", edges=[(1, "a", "knows", "b")], gap_id="g", database="d"
    )
    wrong = spec("bible.create_missing_node", "b", edges=["x"], gap_id="g", database="d")

    def plan() -> None:
        with ManifestWriter(path, REGISTRY) as writer:
            writer.write_all([fine, wrong])

    with pytest.raises(ManifestError, match=r"job 2\): args: .*argument edges.0: Input should"):
        plan()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_a_pool_that_is_not_configured(tmp_path: Path) -> None:
    """A planner pinning jobs to a pool no one configured fails at plan time."""
    path = get_next_filename("wf", "m", tmp_path)

    def plan() -> None:
        with ManifestWriter(path, REGISTRY, pools=["metal", "cloud"]) as writer:
            writer.write(spec("system.echo", meta={"pool": "gpu"}))

    with pytest.raises(ManifestError, match=r"job 1\): meta.pool: 'gpu' is not a configured"):
        plan()
    assert list(tmp_path.iterdir()) == []
