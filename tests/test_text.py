"""schemas.text: what an error or a log line may echo of someone else's text."""

from __future__ import annotations

import io
import json
import logging

from schemas.text import one_line, q
from services.common import logs


def test_plain_names_are_quoted_as_they_are() -> None:
    assert q("eth0") == '"eth0"'
    assert q("net-1.ünï") == '"net-1.ünï"'
    assert q(7) == '"7"'


def test_control_and_invisible_characters_are_escaped() -> None:
    assert q('a\x00b\n"c"\\\u202e\u200b\x7f') == '"a\\x00b\\n\\"c\\"\\\\\\u202e\\u200b\\x7f"'
    assert q(b"\xffok") == '"\\\\xffok"'


def test_long_text_is_cut_and_counted() -> None:
    out = q("x" * 1_000_000)
    assert out == '"' + "x" * 80 + '..." (+999920 more)'
    assert q("y" * 10, limit=4) == '"yyyy..." (+6 more)'
    assert q("y" * 4, limit=4) == '"yyyy"'


def test_one_line_keeps_quotes_and_cuts() -> None:
    assert one_line('say "hi"\r\nto\tme') == 'say "hi"\\r\\nto\\tme'
    assert one_line("z" * 5000, 10) == "zzzzzzzzzz... (+4990 more)"


def _log_through(as_json: bool, message: str, *args: object) -> str:
    stream = io.StringIO()
    handler = logs.setup("info", as_json, service="test", stream=stream)
    try:
        logging.getLogger("knd.test").warning(message, *args)
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_log_lines_stay_one_line_and_bounded() -> None:
    hostile = "name\x00\nFAKE 2026 plumber ERROR forged" + "x" * 1_000_000
    text = _log_through(False, "device %s gone", hostile)
    assert text.count("\n") == 1 and "\x00" not in text
    assert "name\\x00\\nFAKE" in text and len(text) < logs.MAX_MESSAGE + 200
    line = _log_through(True, "device %s gone", hostile)
    assert line.count("\n") == 1
    assert json.loads(line)["msg"].startswith("device name\\x00\\nFAKE")
