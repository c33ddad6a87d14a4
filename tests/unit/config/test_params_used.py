"""No parameter is silently inert: each one is read by the code or says it is not supported.

A parameter counts as read when its name is a string of its own (not a docstring) in
backupmx/ outside the table, or when the default of a read parameter refers to it as
$name (mydomain, reject_tempfail_action ...). A name built from pieces at run time
would not count, which is the point: the reads stay findable by grep.
"""

import ast
import re
from pathlib import Path

import pytest

from backupmx.config import PARAMS, parse

ROOT = Path(__file__).resolve().parents[3] / "backupmx"
TABLE = ROOT / "config" / "params.py"
_REF = re.compile(r"\$\{?(\w+)")


def _strings() -> set[str]:
    """Every string constant of the package outside the table, docstrings left out."""
    out: set[str] = set()
    for path in ROOT.rglob("*.py"):
        if path == TABLE:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        out |= {
            node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings
        }
    return out


def _read() -> set[str]:
    """The parameters the code reads, directly or through the default of one it reads."""
    live = set(PARAMS) & _strings()
    todo = list(live)
    while todo:
        for ref in _REF.findall(PARAMS[todo.pop()].default):
            if ref in PARAMS and ref not in live:
                live.add(ref)
                todo.append(ref)
    return live


READ = _read()


def test_every_parameter_is_read_or_marked_not_supported():
    inert = sorted(n for n, p in PARAMS.items() if n not in READ and not p.unsupported)
    assert inert == [], f"parameters nothing reads and nothing marks as not supported: {inert}"


def test_a_parameter_marked_wholly_not_supported_is_not_read():
    """Once the code acts on one, its mark must go (and `check` stop warning)."""
    stale = sorted(n for n, p in PARAMS.items()
                   if n in READ and p.unsupported and p.supported is None)
    assert stale == [], f"marked not supported but read by the code: {stale}"


@pytest.mark.parametrize("name", sorted(n for n, p in PARAMS.items() if p.unsupported))
def test_setting_a_not_supported_parameter_warns_with_file_and_line(name):
    param = PARAMS[name]
    other = {"bool": "no" if param.supported == "yes" else "yes", "time": "4h", "list": "x",
             "choice": next((c for c in param.choices if c != param.supported), ""),
             "code": "450", "int": "7", "str": "someone"}[param.type]
    cfg = parse(f"myhostname = mx.example.org\n{name} = {other}\n", "/etc/backupmx/main.cf")
    expected = (f"/etc/backupmx/main.cf:2: warning: {name}"
                f"{'' if param.supported is None else ' = ' + other} is not supported: "
                f"{param.unsupported}")
    assert [str(w) for w in cfg.warnings] == [expected]
    if param.supported is not None:
        quiet = parse(f"{name} = {param.supported}\n", "/etc/backupmx/main.cf")
        assert quiet.warnings == []


def test_a_supported_parameter_does_not_warn():
    assert parse("smtpd_client_connection_rate_limit = 10\n").warnings == []
