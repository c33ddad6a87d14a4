"""docs/parameters.md is generated from the parameter table and must stay in step."""

from pathlib import Path

from backupmx.config import render_reference

DOC = Path(__file__).resolve().parents[3] / "docs" / "parameters.md"


def test_parameter_reference_is_current():
    text = DOC.read_text()
    table = text[text.index("| name | default | description |"):]
    assert table == render_reference(), (
        "docs/parameters.md is stale: regenerate its table with render_reference()"
    )
