"""One layer talks to the database: the operator CLI holds no statement of its own, and
the client keeps its statements by name, in modules of one capability each."""

from __future__ import annotations

import ast
from pathlib import Path

import pgmsg.cli
import pgmsg.client

CLI = Path(pgmsg.cli.__file__).parent
CLIENT = Path(pgmsg.client.__file__).parent
#: Past this a module usually holds two ideas (STYLE.md).
MAX_MODULE_LINES = 400


def calls_to_execute(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("execute", "executemany")
    ]


def test_the_cli_sends_no_statement_of_its_own() -> None:
    found = {p.name: lines for p in sorted(CLI.glob("*.py")) if (lines := calls_to_execute(p))}
    assert found == {}, f"the CLI calls execute() (lines by module): {found}; add a Client method instead"


def test_the_client_sends_only_named_statements() -> None:
    """Every execute() of the client passes a name (a module constant, or one chosen
    among them), never a string literal written in the method."""
    inline = []
    for path in sorted(CLIENT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "execute"
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
            ):
                inline.append(f"{path.name}:{node.lineno}")
    assert inline == []


def test_modules_stay_short() -> None:
    long = {
        f"{p.parent.name}/{p.name}": n
        for folder in (CLI, CLIENT)
        for p in folder.glob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_client_and_top_level_exports_are_kept() -> None:
    import pgmsg

    for name in (
        "Acked",
        "Client",
        "ConsumeResult",
        "Delivery",
        "DeliveryRef",
        "Listener",
        "Notification",
        "Subscription",
        "DELIVERY_MODES",
        "DEFAULT_CONNECT_TIMEOUT",
        "with_connect_timeout",
        "parse_payload",
        "decode_json",
    ):
        assert hasattr(pgmsg.client, name), name
    for name in pgmsg.__all__:
        assert hasattr(pgmsg, name), name
    assert pgmsg.Client is pgmsg.client.Client
