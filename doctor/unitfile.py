"""Read systemd service units the way systemd reads them, without systemd.

The rules follow systemd.syntax(7), systemd.unit(5), systemd.service(5) and
systemd.exec(5). Where the manuals leave a detail open, the code follows the
systemd sources: config_parse() in src/shared/conf-parser.c (lines, comments,
continuations), extract_first_word() in src/basic/extract-word.c (quoting),
config_parse_exec() in src/core/load-fragment.c (command lines),
replace_env_argv() in src/basic/env-util.c ($VAR expansion) and
parse_env_file_internal() in src/basic/env-file.c (EnvironmentFile= format).

Nothing here runs systemctl. Bad input becomes a UnitProblem with the path,
the line and a fix. Only parse_exec() raises, with ValueError.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ExecCommand",
    "ServiceSpec",
    "UnitEntry",
    "UnitFile",
    "UnitProblem",
    "load_unit",
    "parse_environment",
    "parse_environment_file",
    "parse_exec",
    "parse_unit",
    "service_spec",
]

# systemd's WHITESPACE: the separators for words, and what strstrip() removes.
_WHITESPACE = " \t\n\r"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_TEXT = 200
_MAX_QUOTED = 60
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCTAL_DIGITS = frozenset("01234567")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
}


class UnitEntry(NamedTuple):
    """One KEY=VALUE assignment of a unit file or drop-in."""

    section: str
    key: str
    value: str
    path: str
    line: int


class UnitProblem(NamedTuple):
    """A fault in a unit, drop-in or environment file, with the fix.

    ``line`` is 1-based, or 0 when the problem concerns the whole file.
    """

    path: str
    line: int
    text: str
    message: str


@dataclass
class UnitFile:
    """A parsed unit file with its drop-ins applied in systemd's order."""

    path: str
    entries: list[UnitEntry]
    problems: list[UnitProblem]
    dropins: list[str]

    def values(self, section: str, key: str) -> list[UnitEntry]:
        """Return the effective assignments of a key in order.

        An empty assignment (``Key=``) resets the list, as systemd does for list
        settings such as ExecStart= and Environment=. Section and key names are
        case-sensitive, as in systemd.
        """
        result: list[UnitEntry] = []
        for entry in self.entries:
            if entry.section != section or entry.key != key:
                continue
            if entry.value == "":
                result.clear()
            else:
                result.append(entry)
        return result

    def value(self, section: str, key: str) -> UnitEntry | None:
        """Return the last effective assignment of a key, or None."""
        values = self.values(section, key)
        return values[-1] if values else None


def _problem(path: str, line: int, text: str, message: str) -> UnitProblem:
    return UnitProblem(path=path, line=line, text=text[:_MAX_TEXT], message=message)


def _shorten(text: str, limit: int = _MAX_QUOTED) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- unit files ---------------------------------------------------------------


def parse_unit(text: str, path: str) -> UnitFile:
    """Parse the text of one unit file; ``path`` is only used in the results."""
    unit = UnitFile(path=path, entries=[], problems=[], dropins=[])
    _UnitParser(unit, path, text).parse()
    return unit


class _UnitParser:
    """Split one file into logical lines and record entries and problems.

    Each file starts without a section, so a drop-in needs its own headers.
    """

    def __init__(self, unit: UnitFile, path: str, text: str) -> None:
        self.unit = unit
        self.path = path
        text = text.removeprefix("\ufeff")
        self.lines = _LINE_BREAK.split(text)
        self.section: str | None = None

    def parse(self) -> None:
        # Physical lines of the logical line being built: (number, text, part).
        pending: list[tuple[int, str, str]] = []
        for number, raw in enumerate(self.lines, start=1):
            # systemd drops comment lines before joining continuations, so a
            # comment inside a continued value is skipped, not ended on.
            stripped = raw.lstrip(_WHITESPACE)
            if stripped and stripped[0] in "#;":
                continue
            if _continues(raw):
                pending.append((number, raw, raw[:-1] + " "))
                continue
            pending.append((number, raw, raw))
            self._parse_logical_line(pending)
            pending = []
        if pending:
            self._parse_logical_line(pending)

    def _add_problem(self, line: int, text: str, message: str) -> None:
        self.unit.problems.append(_problem(self.path, line, text.strip(), message))

    def _parse_logical_line(self, pending: list[tuple[int, str, str]]) -> None:
        number, first_raw, _ = pending[0]
        logical = "".join(part for _, _, part in pending)
        line = logical.strip(_WHITESPACE)
        if not line:
            return

        if line.startswith("["):
            self._parse_section_header(number, first_raw, line)
        elif self.section is None:
            self._add_problem(
                number,
                first_raw,
                f"line {number} comes before any [Section] header, so systemd"
                " ignores it; move it below the section it belongs to, such as"
                " [Service]",
            )
        elif "=" not in line:
            self._add_problem(number, first_raw, self._not_an_assignment(number))
        else:
            self._parse_assignment(pending, logical, self.section)

    def _parse_assignment(
        self, pending: list[tuple[int, str, str]], logical: str, section: str
    ) -> None:
        number, first_raw, _ = pending[0]
        equals = logical.index("=")
        key = logical[:equals].strip(_WHITESPACE)
        if not key:
            self._add_problem(
                number,
                first_raw,
                f"line {number} has no key name before '=', so systemd ignores it;"
                " write it as KEY=VALUE",
            )
            return
        if any(char in _WHITESPACE for char in key):
            self._add_problem(
                number,
                first_raw,
                f"'{_shorten(key)}' is not a valid key name because it contains"
                " whitespace, so systemd ignores the line; remove the spaces",
            )
            return

        after_equals = logical[equals + 1 :]
        value = after_equals.strip(_WHITESPACE)
        self.unit.entries.append(
            UnitEntry(
                section=section, key=key, value=value, path=self.path, line=number
            )
        )

        comment_at = _find_inline_comment(value)
        if comment_at is not None:
            value_start = (
                equals + 1 + len(after_equals) - len(after_equals.lstrip(_WHITESPACE))
            )
            self._report_inline_comment(
                pending, value_start + comment_at, key, value[comment_at:]
            )

    def _parse_section_header(self, number: int, raw: str, line: str) -> None:
        if line.endswith("]"):
            name = line[1:-1]
        else:
            name = line[1:].split("]", 1)[0].strip(_WHITESPACE)
            self._add_problem(
                number,
                raw,
                f"'{_shorten(line)}' on line {number} is not a valid section"
                " header, so systemd rejects the whole file; the line must be"
                " only the name in brackets, such as [Service]",
            )
        if not _string_is_safe(name):
            self._add_problem(
                number,
                raw,
                f"section name '{_shorten(name)}' on line {number} contains quotes,"
                " backslashes or control characters, so systemd rejects the whole"
                " file; use a plain name such as [Service]",
            )
        elif name != name.strip(_WHITESPACE):
            self._add_problem(
                number,
                raw,
                f"section name '{name}' on line {number} has spaces inside the"
                " brackets, so systemd treats it as an unknown section and"
                f" ignores its settings; write [{name.strip(_WHITESPACE)}]",
            )
        self.section = name

    def _not_an_assignment(self, number: int) -> str:
        message = (
            f"line {number} is not a KEY=VALUE assignment or a [Section] header,"
            " so systemd ignores it; "
        )
        previous = self.lines[number - 2] if number >= 2 else ""
        if re.search(r"(?<!\\)(?:\\\\)*\\[ \t]+\Z", previous):
            return message + (
                f"line {number - 1} ends with '\\' followed by spaces, so systemd"
                " does not join the two lines; delete the spaces after the '\\'"
            )
        return message + "fix it, or start it with '#' to make it a comment"

    def _report_inline_comment(
        self,
        pending: list[tuple[int, str, str]],
        offset: int,
        key: str,
        comment: str,
    ) -> None:
        number, raw = pending[0][0], pending[0][1]
        position = 0
        for part_number, part_raw, part in pending:
            if position <= offset < position + len(part):
                number, raw = part_number, part_raw
                break
            position += len(part)
        self._add_problem(
            number,
            raw,
            f"systemd takes '{_shorten(comment.strip())}' as part of the value of"
            f" {key}; move the comment to its own line",
        )


def _continues(raw: str) -> bool:
    """Return True if the line ends with an unescaped backslash."""
    trailing = len(raw) - len(raw.rstrip("\\"))
    return trailing % 2 == 1


def _string_is_safe(text: str) -> bool:
    return not any(
        ord(char) < 0x20 or ord(char) == 0x7F or char in "\\\"'" for char in text
    )


def _find_inline_comment(value: str) -> int | None:
    """Return the index of a '#' that follows whitespace outside quotes.

    Quotes are tracked because '#' inside a quoted ExecStart= or Environment=
    word is deliberate. If a quote is never closed (an apostrophe in a
    Description=, say), the scan is repeated without quote tracking.
    """
    for track_quotes in (True, False):
        quote = ""
        escaped = False
        previous = " "
        for index, char in enumerate(value):
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif quote:
                if char == quote:
                    quote = ""
            elif track_quotes and char in "'\"":
                quote = char
            elif char == "#" and previous in _WHITESPACE:
                return index
            previous = char
        if not quote:
            return None
    return None


# --- reading files ------------------------------------------------------------


class _Unreadable(Exception):
    def __init__(self, problem: UnitProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Masked(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_unit(host_path: Path, display_path: str) -> UnitFile:
    """Read and parse a unit file and its drop-ins, recording errors as problems.

    ``host_path`` is where the file is on this machine (inside a mounted image,
    say) and ``display_path`` is the path reported in entries and problems.
    Drop-ins are every ``*.conf`` in ``<host_path>.d/``, applied after the main
    file in name order.

    A file that cannot be read as a unit (missing, a dangling symlink,
    unreadable, a directory, binary or not UTF-8) gives a UnitFile with no
    entries and one problem. So does a masked unit (an empty file or a link to
    /dev/null), which systemd does not start.
    """
    host_path = Path(host_path)
    unit = UnitFile(path=display_path, entries=[], problems=[], dropins=[])
    try:
        text = _read_unit_text(host_path, display_path)
    except _Unreadable as exc:
        unit.problems.append(exc.problem)
        return unit
    except _Masked as exc:
        unit.problems.append(_masked_problem(display_path, exc.reason))
        return unit
    _UnitParser(unit, display_path, text).parse()

    dropin_dir = host_path.parent / (host_path.name + ".d")
    dropin_display = display_path + ".d"
    for name in _list_dropins(dropin_dir, dropin_display, unit.problems):
        display = posixpath.join(dropin_display, name)
        try:
            text = _read_unit_text(dropin_dir / name, display)
        except _Unreadable as exc:
            unit.problems.append(exc.problem)
            continue
        except _Masked:
            # An empty drop-in, or one linked to /dev/null, sets nothing.
            text = ""
        _UnitParser(unit, display, text).parse()
        unit.dropins.append(display)
    return unit


def _masked_problem(display_path: str, reason: str) -> UnitProblem:
    name = posixpath.basename(display_path)
    if reason == "empty":
        message = (
            f"{display_path} is empty, which systemd treats as a masked unit and"
            " does not start; restore the unit file's contents"
        )
    else:
        message = (
            f"{display_path} is masked (a link to /dev/null or another device),"
            " so systemd does not"
            f" start it; run 'systemctl unmask {name}'"
        )
    return _problem(display_path, 0, "", message)


def _list_dropins(
    dropin_dir: Path, display_dir: str, problems: list[UnitProblem]
) -> list[str]:
    try:
        names = os.listdir(dropin_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError:
        problems.append(
            _problem(
                display_dir,
                0,
                "",
                f"drop-in directory {display_dir} cannot be read: permission"
                " denied; run gunicorn-doctor as a user that can read it",
            )
        )
        return []
    except OSError as exc:
        problems.append(
            _problem(
                display_dir,
                0,
                "",
                f"drop-in directory {display_dir} cannot be read: {exc.strerror};"
                " check the directory",
            )
        )
        return []
    return sorted(name for name in names if name.endswith(".conf"))


def _read_unit_text(host_path: Path, display_path: str) -> str:
    """Return the text of a unit or drop-in file.

    Raise _Masked for an empty file or a device such as /dev/null (systemd's
    null_or_empty() test) and _Unreadable for everything that is not text.
    """

    def unreadable(message: str, line: int = 0, text: str = "") -> _Unreadable:
        return _Unreadable(_problem(display_path, line, text, message))

    try:
        info = os.stat(host_path)
    except FileNotFoundError:
        if os.path.islink(host_path):
            try:
                link = f" to {os.readlink(host_path)}"
            except OSError:
                link = ""
            raise unreadable(
                f"{display_path} is a symbolic link{link} whose target does not"
                " exist; point the link at the real file or remove it"
            ) from None
        raise unreadable(
            f"{display_path} does not exist; check the path of the unit file"
        ) from None
    except PermissionError:
        raise unreadable(
            f"{display_path} cannot be read: permission denied; run"
            " gunicorn-doctor as root or as a user that can read it"
        ) from None
    except OSError as exc:
        raise unreadable(
            f"{display_path} cannot be read: {exc.strerror}; check the path and"
            " any symbolic links on it"
        ) from None

    if stat.S_ISDIR(info.st_mode):
        raise unreadable(
            f"{display_path} is a directory, not a unit file; pass the path of"
            " the unit file itself"
        )
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        raise _Masked("device")
    if not stat.S_ISREG(info.st_mode):
        raise unreadable(
            f"{display_path} is not a regular file; pass the path of the unit"
            " file itself"
        )

    try:
        data = host_path.read_bytes()
    except PermissionError:
        raise unreadable(
            f"{display_path} cannot be read: permission denied; run"
            " gunicorn-doctor as root or as a user that can read it"
        ) from None
    except OSError as exc:
        raise unreadable(
            f"{display_path} cannot be read: {exc.strerror}; check the file"
        ) from None
    if not data:
        raise _Masked("empty")

    nul = data.find(b"\0")
    if nul >= 0:
        line, text = _locate_byte(data, nul)
        raise unreadable(
            f"{display_path} is a binary file (NUL byte on line {line}), not a"
            " unit file; check that the path names the text unit file",
            line,
            text,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, text = _locate_byte(data, exc.start)
        raise unreadable(
            f"{display_path} is not valid UTF-8 (byte 0x{data[exc.start]:02x} on"
            f" line {line}); save the file as UTF-8 text",
            line,
            text,
        ) from None


def _locate_byte(data: bytes, index: int) -> tuple[int, str]:
    """Return the 1-based line number and the text of the line at a byte."""
    start = data.rfind(b"\n", 0, index) + 1
    end = data.find(b"\n", index)
    if end < 0:
        end = len(data)
    text = data[start:end].decode("utf-8", errors="backslashreplace")
    return data.count(b"\n", 0, index) + 1, text.replace("\0", "\\x00")


# --- word splitting -----------------------------------------------------------


class _WordError(Exception):
    """A word cannot be split: kind is "quote" or "escape"."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _WordBuilder:
    """Collect a word from characters and raw bytes (\\x and octal escapes)."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.pending = bytearray()

    def add(self, text: str) -> None:
        self._flush()
        self.pieces.append(text)

    def add_byte(self, value: int) -> None:
        self.pending.append(value)

    def _flush(self) -> None:
        if self.pending:
            self.pieces.append(self.pending.decode("utf-8", errors="surrogateescape"))
            self.pending.clear()

    def text(self) -> str:
        self._flush()
        return "".join(self.pieces)


def _extract_word(
    text: str,
    pos: int,
    *,
    cunescape: bool,
    cunescape_relax: bool = False,
    relax: bool = False,
) -> tuple[str | None, int]:
    """Extract the next word from ``pos`` as extract_first_word() does.

    Quotes may open anywhere in a word and are removed. Backslash escapes work
    inside and outside quotes: C-style escapes with ``cunescape``, otherwise the
    next character is taken literally. ``cunescape_relax`` keeps unknown escapes
    verbatim and ``relax`` accepts an unclosed quote. Return the word (None when
    only whitespace is left) and the position of the next word.
    """
    length = len(text)
    while pos < length and text[pos] in _WHITESPACE:
        pos += 1
    if pos >= length:
        return None, length
    word = _WordBuilder()
    quote = ""
    while pos < length:
        char = text[pos]
        if char == "\\":
            pos += 1
            if pos >= length:
                if cunescape_relax and (not quote or relax):
                    word.add("\\")
                    return word.text(), length
                if relax:
                    return word.text(), length
                raise _WordError("quote" if quote else "escape")
            if not cunescape:
                word.add(text[pos])
                pos += 1
                continue
            escape = _cunescape_one(text, pos)
            if escape is None:
                if not cunescape_relax:
                    raise _WordError("escape")
                word.add("\\" + text[pos])
                pos += 1
                continue
            value, used = escape
            if isinstance(value, int):
                word.add_byte(value)
            else:
                word.add(value)
            pos += used
        elif quote:
            if char == quote:
                quote = ""
            else:
                word.add(char)
            pos += 1
        elif char in "'\"":
            quote = char
            pos += 1
        elif char in _WHITESPACE:
            while pos < length and text[pos] in _WHITESPACE:
                pos += 1
            return word.text(), pos
        else:
            word.add(char)
            pos += 1
    if quote and not relax:
        raise _WordError("quote")
    return word.text(), length


def _cunescape_one(text: str, pos: int) -> tuple[str | int, int] | None:
    """Decode the escape after a backslash as systemd's cunescape_one() does.

    Return the character (or, for \\x and octal escapes, the byte) and the
    number of characters used, or None for an invalid escape. Escapes of NUL
    are invalid.
    """
    char = text[pos]
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], 1
    if char == "x":
        digits = text[pos + 1 : pos + 3]
        if len(digits) != 2 or not _HEX_DIGITS.issuperset(digits):
            return None
        value = int(digits, 16)
        return (value, 3) if value else None
    if char in "uU":
        width = 4 if char == "u" else 8
        digits = text[pos + 1 : pos + 1 + width]
        if len(digits) != width or not _HEX_DIGITS.issuperset(digits):
            return None
        value = int(digits, 16)
        if value == 0 or 0xD800 <= value <= 0xDFFF or value > 0x10FFFF:
            return None
        if char == "U" and (0xFDD0 <= value <= 0xFDEF or value & 0xFFFE == 0xFFFE):
            return None
        return chr(value), width + 1
    if char in _OCTAL_DIGITS:
        digits = text[pos : pos + 3]
        if len(digits) != 3 or not _OCTAL_DIGITS.issuperset(digits):
            return None
        value = int(digits, 8)
        return (value, 3) if 0 < value <= 255 else None
    return None


def _unescape_percent(word: str) -> str:
    """Turn '%%' into '%' as systemd's specifier expansion does.

    NOTE: other specifiers such as %i or %h stay unresolved, because their
    values depend on the unit name and the host.
    """
    result: list[str] = []
    index = 0
    while index < len(word):
        if word.startswith("%%", index):
            result.append("%")
            index += 2
        elif word[index] == "%" and index + 1 < len(word):
            result.append(word[index : index + 2])
            index += 2
        else:
            result.append(word[index])
            index += 1
    return "".join(result)


# --- command lines ------------------------------------------------------------


class ExecCommand(NamedTuple):
    """One command line of ExecStart= or a similar setting.

    ``argv`` is what the process receives before $VAR expansion, and ``path``
    is the program systemd runs. They agree (``path == argv[0]``) unless the
    '@' prefix is given: then the word after the path becomes ``argv[0]``.
    '%%' is turned into '%'; other %-specifiers stay as written.
    """

    raw: str
    prefixes: str
    argv: list[str]
    path: str

    def expand(self, env: dict[str, str]) -> list[str]:
        """Expand environment variables in ``argv`` as systemd does at start.

        A word that is exactly ``$VAR`` becomes the value split into words,
        and quotes in the value group words. An unset or invalid name gives no
        word at all. ``${VAR}`` is replaced inside a word without splitting,
        and an unset one expands to nothing. ``$$`` is a literal '$'. With the
        ':' prefix nothing is expanded. systemd never expands ``path``.
        """
        if ":" in self.prefixes:
            return list(self.argv)
        expanded: list[str] = []
        for word in self.argv:
            if word.startswith("$") and word[1:2] not in ("{", "$"):
                name = word[1:]
                if _ENV_NAME.match(name) and name in env:
                    expanded.extend(_split_env_value(env[name]))
                continue
            expanded.append(_replace_braced_variables(word, env))
        return expanded


def _split_env_value(value: str) -> list[str]:
    words: list[str] = []
    pos = 0
    while True:
        word, pos = _extract_word(value, pos, cunescape=False, relax=True)
        if word is None:
            return words
        words.append(word)


def _replace_braced_variables(word: str, env: dict[str, str]) -> str:
    """Replace ${VAR} and $$ in one word as systemd's replace_env() does.

    '$' before anything else is kept. ``${VAR:-default}`` is not supported in
    command lines, so systemd leaves it as written, and so does this.
    """
    result: list[str] = []
    index = 0
    length = len(word)
    while index < length:
        char = word[index]
        if char != "$" or index + 1 >= length:
            result.append(char)
            index += 1
            continue
        following = word[index + 1]
        if following == "$":
            result.append("$")
            index += 2
        elif following == "{":
            end = index + 2
            while end < length and word[end] not in "}:":
                end += 1
            if end >= length:
                result.append(word[index:])
                index = length
            elif word[end] == ":":
                result.append(word[index : end + 1])
                index = end + 1
            else:
                result.append(env.get(word[index + 2 : end], ""))
                index = end + 1
        else:
            result.append("$")
            index += 1
    return "".join(result)


def parse_exec(value: str) -> ExecCommand:
    """Parse one command line of ExecStart= and similar settings.

    Raise ValueError for unbalanced quotes, an empty command, and a value that
    contains several commands separated by a lone ';' (only Type=oneshot services
    accept those). Unknown backslash escapes are kept verbatim, as systemd
    keeps them with a warning.
    """
    commands = _parse_exec_commands(value)
    if not commands:
        raise ValueError(
            f"command line {value!r} is empty; give the absolute path of the"
            " program to run"
        )
    if len(commands) > 1:
        raise ValueError(
            f"command line {value!r} contains {len(commands)} commands separated by"
            " ';'; give each command its own line, or write '\\;' for a literal"
            " ';' argument"
        )
    return commands[0]


def _parse_exec_commands(value: str) -> list[ExecCommand]:
    """Parse a command-line value that may contain ';'-separated commands."""
    commands: list[ExecCommand] = []
    length = len(value)
    pos = 0
    while True:
        start = _skip_whitespace(value, pos)
        if start >= length:
            return commands
        first, pos = _extract_exec_word(value, start)
        if first is None:
            return commands
        if first == ";":
            continue
        prefixes, program = _split_prefixes(first)
        program = _unescape_percent(program)
        if not program:
            raise ValueError(
                f"command line {value!r} has the prefix {prefixes!r} but no"
                " program; write the absolute path of the program after it"
            )
        argv = [] if "@" in prefixes else [program]
        end = length
        while True:
            pos = _skip_whitespace(value, pos)
            if pos >= length:
                break
            if value[pos] == ";" and _ends_word(value, pos + 1):
                end = pos
                pos += 1
                break
            if value.startswith("\\;", pos) and _ends_word(value, pos + 2):
                argv.append(";")
                pos += 2
                continue
            word, pos = _extract_exec_word(value, pos)
            if word is None:
                break
            argv.append(_unescape_percent(word))
        if not argv:
            raise ValueError(
                f"command line {value!r} uses the '@' prefix but has no argv[0];"
                " with '@' the word after the program path is passed as argv[0]"
            )
        raw = value[start:end].rstrip(_WHITESPACE)
        commands.append(
            ExecCommand(raw=raw, prefixes=prefixes, argv=argv, path=program)
        )


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _ends_word(text: str, pos: int) -> bool:
    return pos >= len(text) or text[pos] in _WHITESPACE


def _extract_exec_word(value: str, pos: int) -> tuple[str | None, int]:
    try:
        return _extract_word(value, pos, cunescape=True)
    except _WordError:
        pass
    # Like systemd, retry keeping unknown escapes such as '\d' verbatim.
    try:
        return _extract_word(value, pos, cunescape=True, cunescape_relax=True)
    except _WordError:
        raise ValueError(
            f"command line {value!r} has unbalanced quotes; close the quote, or"
            " escape a literal quote character with a backslash"
        ) from None


def _split_prefixes(word: str) -> tuple[str, str]:
    """Split the special prefixes ('-', '@', ':', '+', '!', '!!') off a path.

    Each of '-', '@' and ':' may appear once, in any order, together with one
    of '+', '!' or '!!'. The first character that does not fit starts the path.
    """
    seen = ""
    privileges = ""
    for index, char in enumerate(word):
        if char in "-@:" and char not in seen:
            seen += char
        elif char in "+!" and not privileges:
            privileges = char
        elif char == "!" and privileges == "!":
            privileges = "!!"
        else:
            return word[:index], word[index:]
    return word, ""


# --- environment --------------------------------------------------------------


def parse_environment(
    entries: list[UnitEntry],
) -> tuple[dict[str, str], list[UnitProblem]]:
    """Collect the variables set by Environment= assignments.

    Each value contains one or more NAME=VALUE words, split and unquoted as
    systemd does (``"A=b c" D=e``). Later assignments win, and an empty value
    clears everything before it. A word without '=' or with an invalid name is
    a problem and is skipped, as systemd skips it. A quoting error makes
    systemd ignore the rest of that value.
    """
    environment: dict[str, str] = {}
    problems: list[UnitProblem] = []
    for entry in entries:
        if entry.value == "":
            environment.clear()
            continue
        pos = 0
        while True:
            try:
                word, next_pos = _extract_word(entry.value, pos, cunescape=True)
            except _WordError as exc:
                problems.append(_environment_syntax_problem(entry, pos, exc.kind))
                break
            if word is None:
                break
            pos = next_pos
            word = _unescape_percent(word)
            name, equals, value = word.partition("=")
            if not equals:
                message = (
                    f"{entry.key}= word '{_shorten(word)}' has no '=', so systemd"
                    " ignores it; write NAME=value, and quote the whole word when"
                    ' the value contains spaces ("NAME=a b")'
                )
            elif not _ENV_NAME.match(name):
                message = (
                    f"'{_shorten(name)}' is not a valid environment variable name"
                    " (letters, digits and '_', not starting with a digit), so"
                    f" systemd ignores '{_shorten(word)}'; rename the variable"
                )
            elif not _is_utf8(value):
                message = (
                    f"the value of {name} is not valid UTF-8 after unescaping, so"
                    " systemd ignores it; check its \\x and octal escapes"
                )
            else:
                environment[name] = value
                continue
            problems.append(_entry_problem(entry, message))
    return environment, problems


def _environment_syntax_problem(entry: UnitEntry, pos: int, kind: str) -> UnitProblem:
    # systemd has already applied the words before the faulty one.
    rest = _shorten(entry.value[pos:].strip(_WHITESPACE))
    if kind == "quote":
        message = (
            f"{entry.key}= has an unclosed quote, so systemd ignores '{rest}';"
            " close the quote"
        )
    else:
        message = (
            f"{entry.key}= has an invalid backslash escape, so systemd ignores"
            f" '{rest}'; write '\\\\' for a literal backslash"
        )
    return _entry_problem(entry, message)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# States of the EnvironmentFile= parser, named as in systemd's env-file.c.
_PRE_KEY = "pre-key"
_KEY = "key"
_PRE_VALUE = "pre-value"
_VALUE = "value"
_VALUE_ESCAPE = "value-escape"
_SINGLE_QUOTE_VALUE = "single-quote-value"
_DOUBLE_QUOTE_VALUE = "double-quote-value"
_DOUBLE_QUOTE_VALUE_ESCAPE = "double-quote-value-escape"
_COMMENT = "comment"
_COMMENT_ESCAPE = "comment-escape"
_NEWLINE = "\n\r"
# Characters that a backslash escapes inside double quotes (SHELL_NEED_ESCAPE).
_SHELL_NEED_ESCAPE = '"\\`$'
_EXPORTED_NAME = re.compile(r"export[ \t]+([A-Za-z_][A-Za-z0-9_]*)\Z")


def parse_environment_file(
    text: str, path: str
) -> tuple[dict[str, str], list[UnitProblem]]:
    """Parse the contents of an EnvironmentFile= as systemd reads it.

    Lines are NAME=VALUE; lines starting with '#' or ';' are comments. Values
    may be single- or double-quoted (a quoted value may span lines), and a
    backslash at the end of a line continues the value. systemd does not
    expand variables here, and it takes '#' after a value as part of it.

    Problems, each with its line: a line without '=', an invalid name, an
    unclosed quote and an inline comment. A leading ``export`` is recognised
    but not applied: systemd reads ``export NAME`` as the name, rejects it and
    ignores the line. The problem's fix is to remove ``export``.
    """
    return _EnvironmentFileParser(text, path).parse()


class _EnvironmentFileParser:
    """A port of systemd's parse_env_file_internal() that records problems.

    The parser reads one character at a time. Each state has a method that
    handles the next character and may switch the state.
    """

    def __init__(self, text: str, path: str) -> None:
        self.text = text.replace("\r\n", "\n")
        self.path = path
        self.lines = re.split(r"[\n\r]", self.text)
        self.environment: dict[str, str] = {}
        self.problems: list[UnitProblem] = []
        self.state = _PRE_KEY
        self.key: list[str] = []
        self.value: list[str] = []
        # Where trailing whitespace starts, to strip it as systemd does.
        self.last_key_whitespace: int | None = None
        self.last_value_whitespace: int | None = None
        self.after_whitespace = False
        self.comment_reported = False
        self.line = 1
        self.start_line = 1
        self.quote_line = 1

    def parse(self) -> tuple[dict[str, str], list[UnitProblem]]:
        handlers = {
            _PRE_KEY: self._pre_key,
            _KEY: self._key,
            _PRE_VALUE: self._value,
            _VALUE: self._value,
            _VALUE_ESCAPE: self._value_escape,
            _SINGLE_QUOTE_VALUE: self._single_quote_value,
            _DOUBLE_QUOTE_VALUE: self._double_quote_value,
            _DOUBLE_QUOTE_VALUE_ESCAPE: self._double_quote_value_escape,
            _COMMENT: self._comment,
            _COMMENT_ESCAPE: self._comment_escape,
        }
        for index, char in enumerate(self.text):
            handlers[self.state](index, char)
            if char in _NEWLINE:
                self.line += 1
        self._finish()
        return self.environment, self.problems

    def _report(self, line: int, message: str) -> None:
        source = self.lines[line - 1].strip() if line <= len(self.lines) else ""
        self.problems.append(_problem(self.path, line, source, message))

    def _report_missing_equals(self) -> None:
        self._report(
            self.start_line,
            f"line {self.start_line} has no '=', so systemd ignores it; write"
            " NAME=value, or start the line with '#' to make it a comment",
        )

    def _pre_key(self, index: int, char: str) -> None:
        if char in "#;":
            self.state = _COMMENT
        elif char not in _WHITESPACE:
            self.state = _KEY
            self.key = [char]
            self.last_key_whitespace = None
            self.start_line = self.line

    def _key(self, index: int, char: str) -> None:
        if char in _NEWLINE:
            self._report_missing_equals()
            self.state = _PRE_KEY
        elif char == "=":
            self.state = _PRE_VALUE
            self.value = []
            self.last_value_whitespace = None
            self.after_whitespace = False
            self.comment_reported = False
        else:
            if char not in _WHITESPACE:
                self.last_key_whitespace = None
            elif self.last_key_whitespace is None:
                self.last_key_whitespace = len(self.key)
            self.key.append(char)

    def _value(self, index: int, char: str) -> None:
        """Handle PRE_VALUE (before the value or after a quote) and VALUE."""
        unquoted = self.state == _VALUE
        if char in _NEWLINE:
            self._push(strip_trailing=unquoted)
            self.state = _PRE_KEY
        elif char in "'\"" and not unquoted:
            self.state = _SINGLE_QUOTE_VALUE if char == "'" else _DOUBLE_QUOTE_VALUE
            self.quote_line = self.line
        elif char == "\\":
            self.state = _VALUE_ESCAPE
            self.last_value_whitespace = None
            self.after_whitespace = False
        elif char in _WHITESPACE:
            if unquoted:
                if self.last_value_whitespace is None:
                    self.last_value_whitespace = len(self.value)
                self.value.append(char)
            self.after_whitespace = True
        else:
            if char == "#" and self.after_whitespace:
                self._report_inline_comment(index)
            self.state = _VALUE
            self.last_value_whitespace = None
            self.after_whitespace = False
            self.value.append(char)

    def _report_inline_comment(self, index: int) -> None:
        if self.comment_reported:
            return
        self.comment_reported = True
        end = len(self.text)
        for newline in _NEWLINE:
            found = self.text.find(newline, index)
            if found >= 0:
                end = min(end, found)
        comment = _shorten(self.text[index:end].strip())
        self._report(
            self.line,
            f"systemd takes '{comment}' as part of the value of"
            f" {self._name()}; move the comment to its own line",
        )

    def _value_escape(self, index: int, char: str) -> None:
        # A backslash before a line break joins the lines.
        self.state = _VALUE
        if char not in _NEWLINE:
            self.value.append(char)

    def _single_quote_value(self, index: int, char: str) -> None:
        if char == "'":
            self.state = _PRE_VALUE
            self.after_whitespace = False
        else:
            self.value.append(char)

    def _double_quote_value(self, index: int, char: str) -> None:
        if char == '"':
            self.state = _PRE_VALUE
            self.after_whitespace = False
        elif char == "\\":
            self.state = _DOUBLE_QUOTE_VALUE_ESCAPE
        else:
            self.value.append(char)

    def _double_quote_value_escape(self, index: int, char: str) -> None:
        # Like the shell: the backslash stays before characters it does not
        # escape, and an escaped line break is dropped.
        self.state = _DOUBLE_QUOTE_VALUE
        if char in _SHELL_NEED_ESCAPE:
            self.value.append(char)
        elif char != "\n":
            self.value.append("\\" + char)

    def _comment(self, index: int, char: str) -> None:
        if char == "\\":
            self.state = _COMMENT_ESCAPE
        elif char in _NEWLINE:
            self.state = _PRE_KEY

    def _comment_escape(self, index: int, char: str) -> None:
        # Since systemd 254 a backslash does not continue a comment line.
        self.state = _PRE_KEY if char in _NEWLINE else _COMMENT

    def _finish(self) -> None:
        if self.state == _KEY:
            self._report_missing_equals()
        elif self.state in (
            _SINGLE_QUOTE_VALUE,
            _DOUBLE_QUOTE_VALUE,
            _DOUBLE_QUOTE_VALUE_ESCAPE,
        ):
            self._report(
                self.quote_line,
                f"the quote opened on line {self.quote_line} is never closed, so"
                " systemd takes the rest of the file as the value of"
                f" {self._name()}; close the quote",
            )
            self._push(strip_trailing=False)
        elif self.state in (_PRE_VALUE, _VALUE, _VALUE_ESCAPE):
            self._push(strip_trailing=self.state == _VALUE)

    def _name(self) -> str:
        key = self.key
        if self.last_key_whitespace is not None:
            key = key[: self.last_key_whitespace]
        return "".join(key)

    def _push(self, *, strip_trailing: bool) -> None:
        name = self._name()
        value = self.value
        if strip_trailing and self.last_value_whitespace is not None:
            value = value[: self.last_value_whitespace]
        exported = _EXPORTED_NAME.match(name)
        if exported:
            self._report(
                self.start_line,
                f"systemd does not understand 'export': it reads '{name}' as the"
                f" variable name and ignores line {self.start_line}, so"
                f" {exported.group(1)} is not set; remove 'export '",
            )
        elif not _ENV_NAME.match(name):
            self._report(
                self.start_line,
                f"'{_shorten(name)}' on line {self.start_line} is not a valid"
                " environment variable name (letters, digits and '_', not starting"
                " with a digit), so systemd ignores the line; rename the variable",
            )
        else:
            self.environment[name] = "".join(value)


# --- services -----------------------------------------------------------------


@dataclass
class ServiceSpec:
    """The settings that start a service's program, after drop-ins are applied.

    ``environment`` contains only Environment= settings. systemd reads the
    ``environment_files`` when the service starts, and their variables
    override Environment=; read them with parse_environment_file().
    ``exec_start`` is the last effective ExecStart= command.
    """

    unit: UnitFile
    exec_start: ExecCommand | None
    exec_start_entry: UnitEntry | None
    working_directory: UnitEntry | None
    user: UnitEntry | None
    group: UnitEntry | None
    environment: dict[str, str]
    environment_entries: list[UnitEntry]
    environment_files: list[tuple[str, bool, UnitEntry]]
    pid_file: UnitEntry | None
    type: UnitEntry | None
    problems: list[UnitProblem] = field(default_factory=list)


def service_spec(unit: UnitFile) -> ServiceSpec:
    """Extract the [Service] settings that decide how the program is started.

    The problems are the unit's own plus those found here: an ExecStart= that
    cannot be parsed or names no usable program, several ExecStart= commands
    outside Type=oneshot, a missing ExecStart=, invalid Environment= words and
    relative WorkingDirectory= or EnvironmentFile= paths.
    """
    problems = list(unit.problems)
    service_type = unit.value("Service", "Type")
    working_directory = unit.value("Service", "WorkingDirectory")
    exec_start, exec_start_entry = _exec_start(
        unit, service_type, working_directory, problems
    )

    environment_entries = unit.values("Service", "Environment")
    environment, environment_problems = parse_environment(environment_entries)
    problems.extend(environment_problems)

    if working_directory is not None:
        _check_working_directory(working_directory, problems)

    return ServiceSpec(
        unit=unit,
        exec_start=exec_start,
        exec_start_entry=exec_start_entry,
        working_directory=working_directory,
        user=unit.value("Service", "User"),
        group=unit.value("Service", "Group"),
        environment=environment,
        environment_entries=environment_entries,
        environment_files=_environment_files(unit, problems),
        pid_file=unit.value("Service", "PIDFile"),
        type=service_type,
        problems=problems,
    )


def _entry_problem(entry: UnitEntry, message: str) -> UnitProblem:
    return _problem(entry.path, entry.line, f"{entry.key}={entry.value}", message)


def _exec_start(
    unit: UnitFile,
    service_type: UnitEntry | None,
    working_directory: UnitEntry | None,
    problems: list[UnitProblem],
) -> tuple[ExecCommand | None, UnitEntry | None]:
    entries = unit.values("Service", "ExecStart")
    if not entries:
        problems.append(
            _problem(
                unit.path,
                0,
                "",
                f"{unit.path} has no ExecStart= in [Service] (drop-ins included),"
                " so systemd does not start it; add ExecStart= with the absolute"
                " path of gunicorn and its arguments",
            )
        )
        return None, None

    commands: list[tuple[ExecCommand, UnitEntry]] = []
    for entry in entries:
        try:
            parsed = _parse_exec_commands(entry.value)
        except ValueError as exc:
            problems.append(
                _entry_problem(entry, f"ExecStart= is rejected by systemd: {exc}")
            )
            continue
        for command in parsed:
            _check_exec_path(command, entry, working_directory, problems)
            commands.append((command, entry))

    is_oneshot = service_type is not None and service_type.value == "oneshot"
    if len(commands) > 1 and not is_oneshot:
        second_entry = commands[1][1]
        problems.append(
            _entry_problem(
                second_entry,
                f"ExecStart= gives {len(commands)} commands, but only Type=oneshot"
                " services may have more than one, so systemd rejects the"
                " unit; to replace the command in a drop-in, put an empty"
                " 'ExecStart=' line before the new one",
            )
        )
    if not commands:
        return None, None
    return commands[-1]


def _check_exec_path(
    command: ExecCommand,
    entry: UnitEntry,
    working_directory: UnitEntry | None,
    problems: list[UnitProblem],
) -> None:
    path = command.path
    if "$" in path:
        problems.append(
            _entry_problem(
                entry,
                f"the program path '{_shorten(path)}' contains '$', but systemd"
                " does not expand variables in the program path; write the"
                " absolute path literally",
            )
        )
    elif path.endswith("/"):
        problems.append(
            _entry_problem(
                entry,
                f"the program path '{_shorten(path)}' names a directory, so"
                " systemd rejects the command; write the path of the program",
            )
        )
    elif "/" in path and not path.startswith("/"):
        # systemd does not resolve the path against WorkingDirectory=, but the
        # author most likely meant that directory.
        directory = (
            working_directory.value.removeprefix("-") if working_directory else ""
        )
        example = ""
        if directory.startswith("/"):
            example = f", such as {posixpath.join(directory, path)}"
        problems.append(
            _entry_problem(
                entry,
                f"the program path '{_shorten(path)}' is relative, so systemd"
                f" rejects the command; write the absolute path{example}",
            )
        )


def _check_working_directory(entry: UnitEntry, problems: list[UnitProblem]) -> None:
    directory = entry.value.removeprefix("-")
    if directory == "~" or directory.startswith(("/", "%")):
        return
    problems.append(
        _entry_problem(
            entry,
            f"WorkingDirectory={entry.value} is not an absolute path, so systemd"
            " ignores it and a system service starts in /; write the absolute"
            " path",
        )
    )


def _environment_files(
    unit: UnitFile, problems: list[UnitProblem]
) -> list[tuple[str, bool, UnitEntry]]:
    files: list[tuple[str, bool, UnitEntry]] = []
    for entry in unit.values("Service", "EnvironmentFile"):
        optional = entry.value.startswith("-")
        path = _unescape_percent(entry.value[1:] if optional else entry.value)
        # A leading specifier such as %E expands to an absolute directory.
        if not path.startswith(("/", "%")):
            problems.append(
                _entry_problem(
                    entry,
                    f"EnvironmentFile={entry.value} is not an absolute path, so"
                    " systemd ignores it; write the absolute path",
                )
            )
            continue
        files.append((path, optional, entry))
    return files
