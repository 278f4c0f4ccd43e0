"""docs/reliability.md stays true: it lists exactly the cases of scripts/reliability.py, and the fast
ones, rerun through the entry points, still give the exit status and message it shows."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from runs import REPO, SCRIPTS

sys.path.insert(0, str(SCRIPTS))
import reliability  # noqa: E402  (scripts/reliability.py)

ROW = re.compile(r"^\| (?P<name>.+?) \| `(?P<command>.*)` \| (?P<status>.+?) \| `(?P<message>.*)` \|$")


def documented() -> dict[str, dict[str, str]]:
    rows = [ROW.match(line) for line in (REPO / "docs" / "reliability.md").read_text().splitlines()]
    return {m["name"]: {k: v.replace("\\|", "|") for k, v in m.groupdict().items()} for m in rows if m}


def test_the_table_lists_exactly_the_scripts_cases_with_their_commands() -> None:
    rows = documented()
    assert list(rows) == [case.name for case in reliability.CASES]
    for case in reliability.CASES:
        assert rows[case.name]["command"] == case.command().replace("`", "'"), case.name


def test_every_error_in_the_table_is_one_line_with_where_and_fix() -> None:
    for name, row in documented().items():
        if row["status"] == "2":
            assert re.fullmatch(r"error: .+ \(.+\): .+", row["message"]), name


@pytest.mark.parametrize("case", [c for c in reliability.CASES if c.fast], ids=lambda c: c.name)
def test_a_fast_case_still_gives_what_the_table_shows(case: reliability.Case, tmp_path: Path) -> None:
    status, message = reliability.run_case(case, tmp_path)
    row = documented()[case.name]
    assert (status, message) == (row["status"], row["message"])
