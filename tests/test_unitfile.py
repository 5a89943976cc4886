"""Tests for the systemd unit-file parser in doctor.unitfile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import doctor.unitfile
from doctor.unitfile import (
    UnitEntry,
    load_unit,
    parse_environment,
    parse_environment_file,
    parse_exec,
    parse_unit,
    service_spec,
)

SEED_PATH = "/etc/systemd/system/ecommerce.service"
SEED_UNIT = """\
[Unit]
Description=Gunicorn instance to serve ecommerce knowledge
After=network.target

[Service]
User=www-data
Group=www-data
WorkingDirectory=/var/www/ecommerce_knowledge
Environment="PATH=/var/www/ecommerce_knowledge/venv/bin"
ExecStart=/var/www/ecommerce_knowledge/venv/bin/gunicorn -c gunicorn_config.py app:app
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
GUNICORN = "/var/www/ecommerce_knowledge/venv/bin/gunicorn"


def entry(section: str, key: str, value: str, line: int, path: str = SEED_PATH):
    return UnitEntry(section=section, key=key, value=value, path=path, line=line)


def write_unit(tmp_path: Path, text: str, name: str = "ecommerce.service") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the seed deployment -------------------------------------------------------


def test_seed_unit_entries_exact():
    unit = parse_unit(SEED_UNIT, SEED_PATH)

    assert unit.entries == [
        entry(
            "Unit", "Description", "Gunicorn instance to serve ecommerce knowledge", 2
        ),
        entry("Unit", "After", "network.target", 3),
        entry("Service", "User", "www-data", 6),
        entry("Service", "Group", "www-data", 7),
        entry("Service", "WorkingDirectory", "/var/www/ecommerce_knowledge", 8),
        entry(
            "Service",
            "Environment",
            '"PATH=/var/www/ecommerce_knowledge/venv/bin"',
            9,
        ),
        entry("Service", "ExecStart", f"{GUNICORN} -c gunicorn_config.py app:app", 10),
        entry("Service", "ExecReload", "/bin/kill -HUP $MAINPID", 11),
        entry("Service", "Restart", "always", 12),
        entry("Service", "RestartSec", "5", 13),
        entry("Install", "WantedBy", "multi-user.target", 16),
    ]
    assert unit.problems == []
    assert unit.dropins == []
    assert unit.path == SEED_PATH


def test_seed_unit_service_spec():
    spec = service_spec(parse_unit(SEED_UNIT, SEED_PATH))

    assert spec.problems == []
    assert spec.exec_start is not None
    assert spec.exec_start.path == GUNICORN
    assert spec.exec_start.prefixes == ""
    assert spec.exec_start.argv == [GUNICORN, "-c", "gunicorn_config.py", "app:app"]
    assert spec.exec_start_entry is not None
    assert spec.exec_start_entry.line == 10
    assert spec.user is not None and spec.user.value == "www-data"
    assert spec.group is not None and spec.group.value == "www-data"
    assert spec.working_directory is not None
    assert spec.working_directory.value == "/var/www/ecommerce_knowledge"
    assert spec.environment == {"PATH": "/var/www/ecommerce_knowledge/venv/bin"}
    assert [e.line for e in spec.environment_entries] == [9]
    assert spec.environment_files == []
    assert spec.pid_file is None
    assert spec.type is None


def test_seed_unit_loaded_from_file(tmp_path):
    unit = load_unit(write_unit(tmp_path, SEED_UNIT), SEED_PATH)

    assert unit.entries == parse_unit(SEED_UNIT, SEED_PATH).entries
    assert unit.problems == []


# --- drop-ins -------------------------------------------------------------------


def test_dropin_resets_exec_start(tmp_path):
    host_path = write_unit(tmp_path, SEED_UNIT)
    dropin_dir = tmp_path / "ecommerce.service.d"
    dropin_dir.mkdir()
    (dropin_dir / "20-exec.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/srv/venv/bin/gunicorn -b :9000 app:app\n"
    )
    (dropin_dir / "10-env.conf").write_text('[Service]\nEnvironment="WORKERS=4"\n')
    (dropin_dir / "notes.txt").write_text("[Service]\nUser=nobody\n")

    unit = load_unit(host_path, SEED_PATH)
    spec = service_spec(unit)

    assert unit.dropins == [
        f"{SEED_PATH}.d/10-env.conf",
        f"{SEED_PATH}.d/20-exec.conf",
    ]
    assert unit.problems == []
    assert spec.problems == []
    assert [e.value for e in unit.values("Service", "ExecStart")] == [
        "/srv/venv/bin/gunicorn -b :9000 app:app"
    ]
    assert spec.exec_start is not None
    assert spec.exec_start.argv == ["/srv/venv/bin/gunicorn", "-b", ":9000", "app:app"]
    assert spec.exec_start_entry == entry(
        "Service",
        "ExecStart",
        "/srv/venv/bin/gunicorn -b :9000 app:app",
        3,
        f"{SEED_PATH}.d/20-exec.conf",
    )
    assert spec.environment == {
        "PATH": "/var/www/ecommerce_knowledge/venv/bin",
        "WORKERS": "4",
    }
    assert spec.user is not None and spec.user.value == "www-data"


def test_dropin_without_reset_is_problem(tmp_path):
    host_path = write_unit(tmp_path, SEED_UNIT)
    dropin_dir = tmp_path / "ecommerce.service.d"
    dropin_dir.mkdir()
    (dropin_dir / "override.conf").write_text(
        "[Service]\nExecStart=/srv/venv/bin/gunicorn app:app\n"
    )

    spec = service_spec(load_unit(host_path, SEED_PATH))

    assert len(spec.problems) == 1
    problem = spec.problems[0]
    assert problem.path == f"{SEED_PATH}.d/override.conf"
    assert problem.line == 2
    assert "only Type=oneshot" in problem.message
    assert "empty 'ExecStart='" in problem.message
    assert spec.exec_start is not None
    assert spec.exec_start.path == "/srv/venv/bin/gunicorn"


def test_oneshot_allows_several_exec_start():
    text = "[Service]\nType=oneshot\nExecStart=/bin/true\nExecStart=/bin/echo done\n"

    spec = service_spec(parse_unit(text, "job.service"))

    assert spec.problems == []
    assert spec.exec_start is not None
    assert spec.exec_start.argv == ["/bin/echo", "done"]
    assert spec.type is not None and spec.type.value == "oneshot"


def test_dropin_needs_own_section_header(tmp_path):
    host_path = write_unit(tmp_path, SEED_UNIT)
    dropin_dir = tmp_path / "ecommerce.service.d"
    dropin_dir.mkdir()
    (dropin_dir / "bad.conf").write_text("User=nobody\n")

    unit = load_unit(host_path, SEED_PATH)

    assert unit.value("Service", "User").value == "www-data"
    assert len(unit.problems) == 1
    assert unit.problems[0].path == f"{SEED_PATH}.d/bad.conf"
    assert unit.problems[0].line == 1
    assert "before any [Section] header" in unit.problems[0].message


# --- syntax ---------------------------------------------------------------------


def test_continuation_lines_join():
    text = (
        "[Service]\n"
        "ExecStart=/srv/venv/bin/gunicorn \\\n"
        "    --workers 3 \\\n"
        "# systemd skips this comment inside the continuation\n"
        "    app:app\n"
        "User=www-data\n"
    )

    unit = parse_unit(text, "app.service")

    assert unit.problems == []
    exec_start = unit.value("Service", "ExecStart")
    assert exec_start is not None
    assert exec_start.line == 2
    assert exec_start.value == "/srv/venv/bin/gunicorn      --workers 3      app:app"
    assert parse_exec(exec_start.value).argv == [
        "/srv/venv/bin/gunicorn",
        "--workers",
        "3",
        "app:app",
    ]
    assert unit.value("Service", "User").line == 6


def test_escaped_backslash_does_not_continue():
    text = "[Service]\nExecStart=/bin/echo a\\\\\nUser=www-data\n"

    unit = parse_unit(text, "app.service")

    assert unit.value("Service", "ExecStart").value == "/bin/echo a\\\\"
    assert unit.value("Service", "User").value == "www-data"


def test_continuation_at_end_of_file():
    unit = parse_unit("[Service]\nExecStart=/bin/echo a \\", "app.service")

    assert unit.value("Service", "ExecStart").value == "/bin/echo a"
    assert unit.problems == []


def test_space_after_backslash_breaks_continuation():
    text = "[Service]\nExecStart=/srv/venv/bin/gunicorn \\ \n    app:app\n"

    unit = parse_unit(text, "app.service")

    assert len(unit.problems) == 1
    problem = unit.problems[0]
    assert problem.line == 3
    assert problem.text == "app:app"
    assert "line 3 is not a KEY=VALUE assignment or a [Section] header" in (
        problem.message
    )
    assert "line 2 ends with '\\' followed by spaces" in problem.message


def test_inline_comment_kept_and_reported():
    text = "[Service]\nUser=www-data  # the web user\nRestart=always\n"

    unit = parse_unit(text, "app.service")

    assert unit.value("Service", "User").value == "www-data  # the web user"
    assert len(unit.problems) == 1
    problem = unit.problems[0]
    assert problem.line == 2
    assert problem.text == "User=www-data  # the web user"
    assert problem.message == (
        "systemd takes '# the web user' as part of the value of User;"
        " move the comment to its own line"
    )


def test_inline_comment_on_continued_line():
    text = "[Service]\nExecStart=/bin/gunicorn \\\n    app:app # main app\n"

    unit = parse_unit(text, "app.service")

    assert len(unit.problems) == 1
    assert unit.problems[0].line == 3
    assert "'# main app'" in unit.problems[0].message


def test_hash_inside_quotes_not_comment():
    text = '[Service]\nExecStart=/bin/gunicorn --access-logformat "%(h)s #%(r)s"\n'

    unit = parse_unit(text, "app.service")

    assert unit.problems == []


def test_comment_lines_and_whitespace():
    text = (
        "# leading comment\n"
        "; semicolon comment\n"
        "[Service]\n"
        "   # indented comment\n"
        "  User  =  www-data  \n"
        "\n"
        "[X-Custom]\n"
        "Anything=goes\n"
    )

    unit = parse_unit(text, "app.service")

    assert unit.problems == []
    assert unit.entries == [
        entry("Service", "User", "www-data", 5, "app.service"),
        entry("X-Custom", "Anything", "goes", 8, "app.service"),
    ]


def test_junk_lines_reported_with_numbers():
    text = (
        "User=early\n"
        "[Service]\n"
        "User=www-data\n"
        "this is not an assignment\n"
        "=no-key\n"
        "Exec Start=/bin/true\n"
        "[Service\n"
        "Group=www-data\n"
    )

    unit = parse_unit(text, "app.service")

    lines = [(problem.line, problem.text) for problem in unit.problems]
    assert lines == [
        (1, "User=early"),
        (4, "this is not an assignment"),
        (5, "=no-key"),
        (6, "Exec Start=/bin/true"),
        (7, "[Service"),
    ]
    messages = [problem.message for problem in unit.problems]
    assert "before any [Section] header" in messages[0]
    assert messages[1].startswith(
        "line 4 is not a KEY=VALUE assignment or a [Section] header"
    )
    assert "no key name before '='" in messages[2]
    assert "contains whitespace" in messages[3]
    assert "not a valid section header" in messages[4]
    assert [(e.section, e.key, e.line) for e in unit.entries] == [
        ("Service", "User", 3),
        ("Service", "Group", 8),
    ]


def test_crlf_line_endings_and_bom():
    text = "\ufeff[Service]\r\nUser=www-data\r\nGroup=www-data\r\n"

    unit = parse_unit(text, "app.service")

    assert unit.problems == []
    assert [(e.key, e.value, e.line) for e in unit.entries] == [
        ("User", "www-data", 2),
        ("Group", "www-data", 3),
    ]


def test_empty_assignment_resets_list():
    text = (
        "[Service]\n"
        "Environment=A=1\n"
        "Environment=\n"
        "Environment=B=2\n"
        "Environment=C=3\n"
        "User=www-data\n"
        "User=\n"
    )

    unit = parse_unit(text, "app.service")

    assert [e.line for e in unit.values("Service", "Environment")] == [4, 5]
    assert unit.value("Service", "Environment").value == "C=3"
    assert unit.value("Service", "User") is None
    assert unit.values("service", "environment") == []


# --- reading files ----------------------------------------------------------------


def only_problem(unit):
    assert unit.entries == []
    assert len(unit.problems) == 1
    return unit.problems[0]


def test_missing_file(tmp_path):
    unit = load_unit(tmp_path / "absent.service", "/etc/systemd/system/absent.service")

    problem = only_problem(unit)
    assert problem.path == "/etc/systemd/system/absent.service"
    assert problem.line == 0
    assert "does not exist" in problem.message


def test_dangling_symlink(tmp_path):
    link = tmp_path / "app.service"
    link.symlink_to("/nonexistent/app.service")

    problem = only_problem(load_unit(link, "/etc/systemd/system/app.service"))

    assert "symbolic link to /nonexistent/app.service whose target" in (problem.message)
    assert "point the link at the real file" in problem.message


def test_directory_instead_of_file(tmp_path):
    directory = tmp_path / "app.service"
    directory.mkdir()

    problem = only_problem(load_unit(directory, "/etc/systemd/system/app.service"))

    assert "is a directory" in problem.message


def test_binary_file(tmp_path):
    path = tmp_path / "app.service"
    path.write_bytes(b"[Service]\nUser=www-data\nExec\x00Start=/bin/true\n")

    problem = only_problem(load_unit(path, "/etc/systemd/system/app.service"))

    assert problem.line == 3
    assert "binary file (NUL byte on line 3)" in problem.message


def test_invalid_utf8(tmp_path):
    path = tmp_path / "app.service"
    path.write_bytes(b"[Unit]\nDescription=caf\xe9\n")

    problem = only_problem(load_unit(path, "/etc/systemd/system/app.service"))

    assert problem.line == 2
    assert "not valid UTF-8 (byte 0xe9 on line 2)" in problem.message
    assert "save the file as UTF-8" in problem.message


def test_masked_by_dev_null_link(tmp_path):
    link = tmp_path / "app.service"
    link.symlink_to("/dev/null")

    problem = only_problem(load_unit(link, "/etc/systemd/system/app.service"))

    assert "masked" in problem.message
    assert "systemctl unmask app.service" in problem.message


def test_empty_file_is_masked(tmp_path):
    path = write_unit(tmp_path, "", "app.service")

    problem = only_problem(load_unit(path, "/etc/systemd/system/app.service"))

    assert "is empty" in problem.message


# The tests run as root, who can read any file. To get a real EACCES, the read
# runs in a child process that setpriv(1) starts as uid and gid 65534 (the user
# "nobody"). The child loads doctor/unitfile.py by path, so it needs read access
# to that file only.
READ_AS_NOBODY = """
import importlib.util, json, os, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("unitfile_as_nobody", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
unit = module.load_unit(Path(sys.argv[2]), "/etc/systemd/system/app.service")
print(json.dumps({
    "uid": os.getuid(),
    "entries": len(unit.entries),
    "problems": [[p.line, p.message] for p in unit.problems],
}))
"""


@pytest.fixture
def shared_dir():
    # pytest's tmp_path is inside a directory with mode 0700, which uid 65534
    # cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="unitfile-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def load_as_nobody(host_path: Path) -> dict:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv(1) is not installed")
    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root")
    result = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            READ_AS_NOBODY,
            doctor.unitfile.__file__,
            str(host_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_unreadable_file(shared_dir):
    readable = shared_dir / "readable.service"
    readable.write_text(SEED_UNIT)
    readable.chmod(0o644)
    unreadable = shared_dir / "app.service"
    unreadable.write_text(SEED_UNIT)
    unreadable.chmod(0o600)

    control = load_as_nobody(readable)
    outcome = load_as_nobody(unreadable)

    assert control == {"uid": 65534, "entries": 11, "problems": []}
    assert outcome["uid"] == 65534
    assert outcome["entries"] == 0
    assert len(outcome["problems"]) == 1
    line, message = outcome["problems"][0]
    assert line == 0
    assert "/etc/systemd/system/app.service cannot be read: permission denied" in (
        message
    )


# --- command lines ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "argv"),
    [
        ("/bin/echo a  b", ["/bin/echo", "a", "b"]),
        ('/bin/echo "a b" c', ["/bin/echo", "a b", "c"]),
        ("/bin/echo 'a \"b\"'", ["/bin/echo", 'a "b"']),
        ('/bin/echo --bind="127.0.0.1:8000"', ["/bin/echo", "--bind=127.0.0.1:8000"]),
        ('/bin/echo ""', ["/bin/echo", ""]),
        # '\ ' is no C escape, so systemd keeps it verbatim, in one word.
        ("/bin/echo a\\ b", ["/bin/echo", "a\\ b"]),
        ('/bin/echo "tab\\there"', ["/bin/echo", "tab\there"]),
        ("/bin/echo 'single\\nquote'", ["/bin/echo", "single\nquote"]),
        ('/bin/echo "\\x41\\102\\u00e9"', ["/bin/echo", "ABé"]),
        ('/bin/echo "\\xc3\\xa9"', ["/bin/echo", "é"]),
        ('/bin/echo \\"quoted\\"', ["/bin/echo", '"quoted"']),
        ("/bin/echo \\s", ["/bin/echo", " "]),
        ("/bin/grep \\d+", ["/bin/grep", "\\d+"]),
        ("/bin/echo 100%%", ["/bin/echo", "100%"]),
        (
            '/bin/gunicorn --access-logformat "%(h)s %(r)s"',
            ["/bin/gunicorn", "--access-logformat", "%(h)s %(r)s"],
        ),
        ("/usr/bin/find . \\; -print", ["/usr/bin/find", ".", ";", "-print"]),
        ('"/opt/my app/bin/run" x', ["/opt/my app/bin/run", "x"]),
    ],
)
def test_exec_quoting_and_escapes(value, argv):
    command = parse_exec(value)

    assert command.argv == argv
    assert command.path == argv[0]
    assert command.raw == value
    assert command.prefixes == ""


@pytest.mark.parametrize(
    ("value", "prefixes", "path", "argv"),
    [
        ("-/bin/true", "-", "/bin/true", ["/bin/true"]),
        ("+/bin/true x", "+", "/bin/true", ["/bin/true", "x"]),
        ("!!/bin/true", "!!", "/bin/true", ["/bin/true"]),
        ("-:!/bin/true", "-:!", "/bin/true", ["/bin/true"]),
        (
            "@/srv/venv/bin/python gunicorn app:app",
            "@",
            "/srv/venv/bin/python",
            ["gunicorn", "app:app"],
        ),
        ('"-/bin/true"', "-", "/bin/true", ["/bin/true"]),
    ],
)
def test_exec_prefixes(value, prefixes, path, argv):
    command = parse_exec(value)

    assert command.prefixes == prefixes
    assert command.path == path
    assert command.argv == argv


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("-", "no program"),
        ("@/bin/true", "no argv[0]"),
        ('/bin/echo "unclosed', "unbalanced quotes"),
        ("/bin/echo 'unclosed\\'", "unbalanced quotes"),
        ("/bin/true ; /bin/false", "2 commands separated by ';'"),
    ],
)
def test_exec_invalid(value, message):
    with pytest.raises(ValueError) as info:
        parse_exec(value)

    assert message in str(info.value)


def test_exec_start_problems_in_service_spec():
    text = (
        "[Service]\n"
        "ExecStart=venv/bin/gunicorn app:app\n"
        "WorkingDirectory=srv/app\n"
        "EnvironmentFile=-/etc/default/app\n"
        "EnvironmentFile=relative.env\n"
    )

    spec = service_spec(parse_unit(text, "app.service"))

    messages = {problem.line: problem.message for problem in spec.problems}
    assert messages[2].endswith(
        "is relative, so systemd rejects the command; write the absolute path"
    )
    assert "WorkingDirectory=srv/app is not an absolute path" in messages[3]
    assert "EnvironmentFile=relative.env is not an absolute path" in messages[5]
    assert len(spec.problems) == 3
    assert [(path, optional) for path, optional, _ in spec.environment_files] == [
        ("/etc/default/app", True)
    ]


def test_relative_exec_path_suggests_directory():
    text = (
        "[Service]\n"
        "WorkingDirectory=-/var/www/app\n"
        "ExecStart=venv/bin/gunicorn app:app\n"
    )

    spec = service_spec(parse_unit(text, "app.service"))

    assert len(spec.problems) == 1
    assert spec.problems[0].line == 3
    assert spec.problems[0].message.endswith(
        "write the absolute path, such as /var/www/app/venv/bin/gunicorn"
    )


def test_variable_in_exec_path():
    spec = service_spec(parse_unit("[Service]\nExecStart=$VENV/bin/gunicorn\n", "a"))

    assert len(spec.problems) == 1
    assert "does not expand variables in the program path" in (spec.problems[0].message)


def test_unparsable_exec_start_in_service_spec():
    spec = service_spec(parse_unit('[Service]\nExecStart=/bin/echo "a\n', "a.service"))

    assert spec.exec_start is None
    assert len(spec.problems) == 1
    assert spec.problems[0].line == 2
    assert "unbalanced quotes" in spec.problems[0].message


def test_missing_exec_start_in_service_spec():
    spec = service_spec(parse_unit("[Service]\nUser=www-data\n", "app.service"))

    assert spec.exec_start is None
    assert len(spec.problems) == 1
    assert "has no ExecStart=" in spec.problems[0].message


# --- variable expansion ----------------------------------------------------------


def test_expand_whole_word_splits():
    command = parse_exec("/bin/gunicorn $OPTS app:app")

    argv = command.expand({"OPTS": "--workers 3  --bind '0.0.0.0:80 x'"})

    assert argv == [
        "/bin/gunicorn",
        "--workers",
        "3",
        "--bind",
        "0.0.0.0:80 x",
        "app:app",
    ]


def test_expand_braced_inside_word():
    command = parse_exec("/bin/gunicorn --bind=${HOST}:${PORT} --name=${OPTS}")

    argv = command.expand({"HOST": "0.0.0.0", "PORT": "8000", "OPTS": "a b"})

    assert argv == ["/bin/gunicorn", "--bind=0.0.0.0:8000", "--name=a b"]


def test_expand_dollar_in_word_is_literal():
    command = parse_exec("/bin/echo pre$HOST $$HOST cost$$ ${HOST:-x} $")

    argv = command.expand({"HOST": "h"})

    assert argv == ["/bin/echo", "pre$HOST", "$HOST", "cost$", "${HOST:-x}"]


def test_expand_unknown_variables_empty():
    command = parse_exec("/bin/echo $MISSING x${MISSING}y $9bad")

    assert command.expand({}) == ["/bin/echo", "xy"]


def test_expand_quoted_dollar_word_still_splits():
    # systemd expands after unquoting, so quotes around $VAR do not stop it.
    command = parse_exec('/bin/echo "$OPTS"')

    assert command.expand({"OPTS": "a b"}) == ["/bin/echo", "a", "b"]


def test_expand_disabled_by_colon_prefix():
    command = parse_exec(":/bin/echo $OPTS ${OPTS}")

    assert command.expand({"OPTS": "a b"}) == ["/bin/echo", "$OPTS", "${OPTS}"]


def test_expand_mainpid_whole_word():
    command = parse_exec("/bin/kill -HUP $MAINPID")

    assert command.expand({"MAINPID": "1234"}) == ["/bin/kill", "-HUP", "1234"]


# --- Environment= ----------------------------------------------------------------


def environment_entries(*values: str) -> list[UnitEntry]:
    return [
        entry("Service", "Environment", value, line, "app.service")
        for line, value in enumerate(values, start=10)
    ]


def test_environment_quotes_and_words():
    environment, problems = parse_environment(
        environment_entries(
            '"A=b c" D=e',
            'F=\'g h\' I="j\\"k"',
            'A=override "L=percent 100%%"',
            "EMPTY=",
        )
    )

    assert problems == []
    assert environment == {
        "A": "override",
        "D": "e",
        "F": "g h",
        "I": 'j"k',
        "L": "percent 100%",
        "EMPTY": "",
    }


def test_environment_bad_words():
    environment, problems = parse_environment(
        environment_entries(
            "PATH=/srv/venv/bin /usr/bin",
            "9LIVES=x GOOD=1",
            'OK=1 "BROKEN=2',
        )
    )

    assert environment == {"PATH": "/srv/venv/bin", "GOOD": "1", "OK": "1"}
    assert [(p.line, p.text) for p in problems] == [
        (10, "Environment=PATH=/srv/venv/bin /usr/bin"),
        (11, "Environment=9LIVES=x GOOD=1"),
        (12, 'Environment=OK=1 "BROKEN=2'),
    ]
    assert "word '/usr/bin' has no '='" in problems[0].message
    assert "'9LIVES' is not a valid environment variable name" in problems[1].message
    assert "unclosed quote" in problems[2].message


def test_environment_empty_value_resets():
    environment, problems = parse_environment(environment_entries("A=1", "", "B=2"))

    assert problems == []
    assert environment == {"B": "2"}


# --- EnvironmentFile= ------------------------------------------------------------

ENVIRONMENT_FILE = """\
# database settings
; old style comment
DATABASE_URL=postgres://db/app
  SPACED = value with spaces  \n\
QUOTED="a \\"quoted\\" $value"
SINGLE='no $expansion \\n here'
export SECRET_KEY=abc
CONTINUED=first \\
second
MULTI="line one
line two"
WITH_COMMENT=value # note
this line is junk
9BAD=1
EMPTY=
"""


def test_environment_file_values():
    environment, _problems = parse_environment_file(ENVIRONMENT_FILE, "/etc/app.env")

    assert environment == {
        "DATABASE_URL": "postgres://db/app",
        "SPACED": "value with spaces",
        "QUOTED": 'a "quoted" $value',
        "SINGLE": "no $expansion \\n here",
        "CONTINUED": "first second",
        "MULTI": "line one\nline two",
        "WITH_COMMENT": "value # note",
        "EMPTY": "",
    }


def test_environment_file_problems():
    _environment, problems = parse_environment_file(ENVIRONMENT_FILE, "/etc/app.env")

    assert [(p.path, p.line, p.text) for p in problems] == [
        ("/etc/app.env", 7, "export SECRET_KEY=abc"),
        ("/etc/app.env", 12, "WITH_COMMENT=value # note"),
        ("/etc/app.env", 13, "this line is junk"),
        ("/etc/app.env", 14, "9BAD=1"),
    ]
    assert "remove 'export '" in problems[0].message
    assert "SECRET_KEY is not set" in problems[0].message
    assert "'# note' as part of the value of WITH_COMMENT" in problems[1].message
    assert "line 13 has no '='" in problems[2].message
    assert "'9BAD' on line 14 is not a valid environment variable name" in (
        problems[3].message
    )


def test_environment_file_unclosed_quote():
    environment, problems = parse_environment_file(
        'A=1\nB="never closed\nC=3\n', "/etc/app.env"
    )

    assert environment == {"A": "1", "B": "never closed\nC=3\n"}
    assert len(problems) == 1
    assert problems[0].line == 2
    assert "never closed" in problems[0].message


# --- properties -------------------------------------------------------------------

UNIT_FRAGMENTS = [
    "[Service]",
    "[Unit",
    "ExecStart=/bin/echo a \\",
    "ExecStart=",
    'Environment="A=b c" D',
    "# comment",
    "; comment",
    "User=x # y",
    "junk",
    "=v",
    "\\",
    "\\\\",
    "[ Service ]",
]
unit_like_text = st.lists(
    st.one_of(
        st.sampled_from(UNIT_FRAGMENTS),
        st.text(alphabet="[]=#;\\\"' \t\rabcXY%$\x00\ufeff", max_size=20),
    ),
    max_size=30,
).map("\n".join)


def max_line(text: str) -> int:
    return max(1, len(text.splitlines()))


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(st.text(), unit_like_text))
def test_parse_unit_never_raises(text):
    unit = parse_unit(text, "fuzz.service")

    for problem in unit.problems:
        assert 1 <= problem.line <= max_line(text)
        assert len(problem.text) <= 200
    for item in unit.entries:
        assert 1 <= item.line <= max_line(text)
    spec = service_spec(unit)
    assert len(spec.problems) >= len(unit.problems)


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.text(), unit_like_text))
def test_parse_exec_raises_only_valueerror(text):
    try:
        command = parse_exec(text)
    except ValueError:
        return
    assert command.argv
    assert isinstance(command.expand({"A": "x y"}), list)


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.text(), unit_like_text))
def test_parse_environment_file_never_raises(text):
    _environment, problems = parse_environment_file(text, "fuzz.env")

    for problem in problems:
        assert 1 <= problem.line <= max_line(text)
