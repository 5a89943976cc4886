"""systemd checks against unit files in --root trees and --unit files.

systemd is not PID 1 on the test machine, so nothing starts these units and
systemctl cannot be asked: the checks read the unit files and their drop-ins.
The code that calls systemctl runs against a fake systemctl script put first
on PATH by the fake_systemctl fixture.

Trees are written by each test: the unit under etc/systemd/system, the
deployment under srv/shop, and passwd and group copied from the ecommerce
fixture (root, www-data, deploy, nobody). The tree's venv contains a
launcher script and an interpreter file that are never run: under --root the
doctor only reads the tree.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap
from pathlib import Path

import pytest

from checks import systemd as systemd_checks
from doctor.context import Context, Options
from doctor.findings import Severity
from doctor.runner import run_checks
from doctor.target import DiscoveryOptions, discover
from tests.conftest import make_venv
from tests.helpers import FIXTURES, findings_of, run_doctor, run_json

OTHER_UID = 1000
SYSTEMD_IDS = (
    "systemd-unit",
    "systemd-workdir",
    "systemd-execstart",
    "systemd-user",
    "systemd-type",
    "systemd-restart",
    "systemd-reload",
    "systemd-killmode",
    "systemd-runtime-dir",
    "systemd-environment",
)
APP_SOURCE = (
    "def app(environ, start_response):\n"
    '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
    '    return [b"ok"]\n'
)
BASE_SERVICE = """\
[Unit]
Description=shop

[Service]
User=www-data
Group=www-data
WorkingDirectory=/srv/shop
ExecStart=/srv/shop/venv/bin/gunicorn -c gunicorn.conf.py app:app
ExecReload=/bin/kill -s HUP $MAINPID
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
EXEC_START = "ExecStart=/srv/shop/venv/bin/gunicorn -c gunicorn.conf.py app:app\n"
UNIT_PATH = "/etc/systemd/system/shop.service"


# --- helpers ------------------------------------------------------------------


def service(*, drop: tuple[str, ...] = (), add: str = "", replace=None) -> str:
    """Return BASE_SERVICE without the keys in ``drop``, plus ``add`` in [Service]."""
    lines = [
        line
        for line in BASE_SERVICE.splitlines(keepends=True)
        if line.split("=", 1)[0] not in drop
    ]
    text = "".join(lines).replace("[Service]\n", "[Service]\n" + add)
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def make_tree(base: Path, unit: str, config: str = 'bind = "127.0.0.1:8000"\n'):
    """Write a root with shop.service, the deployment and its venv."""
    root = base / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy(FIXTURES / "ecommerce" / "etc" / name, root / "etc" / name)
    (units / "shop.service").write_text(unit)
    app = root / "srv" / "shop"
    (app / "venv" / "bin").mkdir(parents=True)
    (app / "app.py").write_text(APP_SOURCE)
    (app / "gunicorn.conf.py").write_text(config)
    (app / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    launcher = app / "venv" / "bin" / "gunicorn"
    launcher.write_text("#!/srv/shop/venv/bin/python\nfrom gunicorn.app import run\n")
    launcher.chmod(0o755)
    interpreter = app / "venv" / "bin" / "python"
    interpreter.write_text("stands in for the venv's interpreter\n")
    interpreter.chmod(0o755)
    return root


def check_tree(root: Path, *extra: str) -> dict:
    report, result = run_json(
        "check", "--root", str(root), "--select", "systemd", "--static", *extra
    )
    assert result.returncode in (0, 1), result.stderr
    return report


def only(report: dict, check_id: str) -> dict:
    found = findings_of(report, check_id)
    assert len(found) == 1, found
    return found[0]


def severities(report: dict, check_id: str) -> list[str]:
    return [f["severity"] for f in findings_of(report, check_id)]


def by_title(report: dict, check_id: str, fragment: str) -> dict:
    found = [f for f in findings_of(report, check_id) if fragment in f["title"]]
    assert len(found) == 1, findings_of(report, check_id)
    return found[0]


# --- a sound unit ---------------------------------------------------------------


@pytest.mark.quiet(*SYSTEMD_IDS)
def test_sound_unit_is_quiet(tmp_path):
    root = make_tree(tmp_path, service(add="EnvironmentFile=-/etc/shop/env\n"))

    report = check_tree(root)

    for check_id in SYSTEMD_IDS:
        assert severities(report, check_id) == ["ok"], findings_of(report, check_id)
    assert only(report, "systemd-workdir")["title"] == (
        "www-data can enter and list WorkingDirectory /srv/shop"
    )
    assert only(report, "systemd-execstart")["title"] == (
        "www-data can execute the ExecStart= program /srv/shop/venv/bin/gunicorn"
        " and its interpreter /srv/shop/venv/bin/python"
    )
    assert only(report, "systemd-user")["title"] == (
        "the service runs as www-data (uid 33) with group www-data"
    )


# --- systemd-unit ---------------------------------------------------------------


@pytest.mark.fires("systemd-unit")
def test_inline_comment_on_exec_start(tmp_path):
    unit = service(replace={EXEC_START: EXEC_START.rstrip("\n") + "  # the main app\n"})
    root = make_tree(tmp_path, unit)

    report = check_tree(root)

    finding = only(report, "systemd-unit")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "a comment on shop.service:8 becomes part of the value of ExecStart="
    )
    assert "gunicorn receives the comment's words as arguments" in finding["detail"]
    assert "'# the main app'" in finding["detail"]
    assert finding["fix"] == "Move the comment to its own line"
    assert finding["location"] == {"path": UNIT_PATH, "line": 8}


@pytest.mark.fires("systemd-unit")
def test_junk_line_in_dropin(tmp_path):
    root = make_tree(tmp_path, service())
    dropins = root / "etc/systemd/system/shop.service.d"
    dropins.mkdir()
    (dropins / "override.conf").write_text("[Service]\nRestart always\n")

    report = check_tree(root)

    finding = only(report, "systemd-unit")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        "line 2 is not a Name=value assignment or a [Section] header, so systemd"
        " ignores it"
    )
    assert finding["location"] == {
        "path": "/etc/systemd/system/shop.service.d/override.conf",
        "line": 2,
    }
    assert finding["fix"] == "Fix it, or start it with '#' to make it a comment"


@pytest.mark.fires("systemd-unit")
def test_invalid_environment_word_keeps_value_out(tmp_path):
    root = make_tree(tmp_path, service(add="Environment=DB-PASSWORD=hunter2\n"))

    report = check_tree(root)

    finding = only(report, "systemd-unit")
    assert finding["severity"] == "warning"
    assert finding["title"] == "systemd ignores part of Environment= on shop.service:5"
    assert "is not a valid environment variable name" in finding["detail"]
    assert "hunter2" not in json.dumps(report)


@pytest.mark.fires("systemd-unit")
def test_masked_unit(tmp_path):
    root = make_tree(tmp_path, service())
    masked = root / "etc/systemd/system/other.service"
    masked.symlink_to("/dev/null")

    report = check_tree(
        root, "--unit", "/etc/systemd/system/other.service", "--chdir", "/srv/shop"
    )

    titles = [f["title"] for f in findings_of(report, "systemd-unit")]
    assert any("is masked" in title for title in titles), titles
    assert severities(report, "systemd-unit")[0] == "error"


# --- the systemctl code path (fake systemctl on PATH) ------------------------


FAKE_SYSTEMCTL = """\
#!/bin/sh
# Stands in for systemctl: the test machine does not run systemd.
echo "$@" >> "{log}"
case "$2" in
show) cat "{show}" ;;
cat) cat "{cat}" ;;
*) echo "unexpected arguments: $@" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch):
    """Put a fake systemctl first on PATH; return its (show, cat, log) files."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    show = tmp_path / "show.txt"
    cat = tmp_path / "cat.txt"
    log = tmp_path / "systemctl.log"
    script = bin_dir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL.format(log=log, show=show, cat=cat))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return show, cat, log


def write_systemctl_output(show: Path, cat: Path, unit: Path, dropin: Path) -> None:
    show.write_text(
        "LoadState=loaded\n"
        f"FragmentPath={unit}\n"
        f"DropInPaths={dropin}\n"
        "NeedDaemonReload=yes\n"
    )
    cat.write_text(f"# {unit}\n{unit.read_text()}\n# {dropin}\n{dropin.read_text()}")


def test_read_effective_unit_splits_files(tmp_path, fake_systemctl):
    show, cat, log = fake_systemctl
    unit = tmp_path / "shop.service"
    unit.write_text("[Service]\n# /etc is not a file header\nExecStart=/bin/true\n")
    dropin = tmp_path / "shop.service.d" / "override.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nRestart always\nExecReload=/bin/kill -HUP $MAINPID\n")
    write_systemctl_output(show, cat, unit, dropin)

    effective = systemd_checks.read_effective_unit("shop.service", str(unit))

    assert effective.source == "systemctl cat shop.service"
    assert effective.properties["NeedDaemonReload"] == "yes"
    assert effective.files == [str(unit), str(dropin)]
    reload = effective.spec.unit.value("Service", "ExecReload")
    assert (reload.path, reload.line) == (str(dropin), 3)
    exec_start = effective.spec.exec_start_entry
    assert (exec_start.path, exec_start.line) == (str(unit), 3)
    problems = [(p.path, p.line) for p in effective.spec.problems]
    assert problems == [(str(dropin), 2)]
    calls = log.read_text().splitlines()
    assert calls[0].startswith("--no-pager show shop.service --property=LoadState")
    assert calls[1] == "--no-pager cat shop.service"


def test_read_effective_unit_other_fragment(tmp_path, fake_systemctl):
    show, _cat, _log = fake_systemctl
    show.write_text("LoadState=loaded\nFragmentPath=/lib/systemd/system/shop.service\n")

    with pytest.raises(systemd_checks.SystemctlError) as raised:
        systemd_checks.read_effective_unit(
            "shop.service", str(tmp_path / "shop.service")
        )

    assert "systemd loads shop.service from /lib/systemd/system/shop.service" in str(
        raised.value
    )


def test_read_effective_unit_unknown_unit(tmp_path, fake_systemctl):
    show, _cat, _log = fake_systemctl
    show.write_text("LoadState=not-found\nFragmentPath=\n")

    with pytest.raises(systemd_checks.SystemctlError) as raised:
        systemd_checks.read_effective_unit("shop.service", str(tmp_path / "x"))

    assert str(raised.value) == (
        "systemd has not loaded shop.service (LoadState=not-found)"
    )


def test_read_effective_unit_systemctl_fails(tmp_path, fake_systemctl):
    # show.txt is never written, so the fake's cat exits with status 1.
    with pytest.raises(systemd_checks.SystemctlError) as raised:
        systemd_checks.read_effective_unit("shop.service", str(tmp_path / "x"))

    message = str(raised.value)
    assert "systemctl --no-pager show shop.service" in message
    assert "failed: cat: " in message
    assert "No such file or directory" in message


def test_systemd_detection(tmp_path):
    run_dir = tmp_path / "run-systemd-system"
    comm = tmp_path / "comm"
    comm.write_text("systemd\n")

    assert not systemd_checks.systemd_is_running(str(run_dir), str(comm))
    run_dir.mkdir()
    assert systemd_checks.systemd_is_running(str(run_dir), str(comm))
    comm.write_text("bash\n")
    assert not systemd_checks.systemd_is_running(str(run_dir), str(comm))


@pytest.mark.fires("systemd-unit")
def test_unit_check_through_systemctl(tmp_path, fake_systemctl, monkeypatch):
    """Run systemd-unit on the live host as if systemd were PID 1.

    Only two things are faked: the result of the "is systemd PID 1 here" test
    and systemctl itself (a script on PATH printing prepared output).
    """
    show, cat, _log = fake_systemctl
    monkeypatch.setattr(systemd_checks, "systemd_is_running", lambda: True)
    app = tmp_path / "app"
    app.mkdir()
    unit = tmp_path / "shop.service"
    unit.write_text(
        f"[Service]\nWorkingDirectory={app}\n"
        f"ExecStart={app}/venv/bin/gunicorn app:app\n"
    )
    dropin = tmp_path / "shop.service.d" / "override.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nRestart=always  # keep it up\n")
    write_systemctl_output(show, cat, unit, dropin)
    target = discover(DiscoveryOptions(unit=str(unit), cwd=str(tmp_path)))
    ctx = Context(target, Options(static=True))
    spec = systemd_checks.systemd_unit_check

    findings = run_checks(ctx, [spec])

    titles = {f.title: f for f in findings}
    changed = titles["shop.service changed on disk since systemd loaded it"]
    assert changed.severity == Severity.WARNING
    assert changed.fix == "systemctl daemon-reload && systemctl restart shop.service"
    comment = titles[
        "a comment on override.conf:2 becomes part of the value of Restart="
    ]
    assert comment.severity == Severity.WARNING
    assert comment.location.path == str(dropin)
    assert comment.location.line == 2


# --- systemd-workdir --------------------------------------------------------------


@pytest.mark.fires("systemd-workdir")
@pytest.mark.fires("systemd-execstart")
def test_workdir_blocked_for_nobody(tmp_path):
    unit = service(replace={"User=www-data\nGroup=www-data\n": "User=nobody\n"})
    root = make_tree(tmp_path, unit)
    srv = root / "srv"
    os.chown(srv, OTHER_UID, OTHER_UID)
    srv.chmod(0o700)

    report = check_tree(root)

    workdir = only(report, "systemd-workdir")
    assert workdir["severity"] == "error"
    assert workdir["title"] == (
        "nobody cannot enter WorkingDirectory /srv/shop: blocked at /srv"
    )
    assert "status=200/CHDIR" in workdir["detail"]
    assert "drwx------ deploy deploy /srv" in workdir["evidence"]
    assert workdir["fix"].startswith("chmod o+x /srv  (search only, not listing)")
    assert workdir["location"] == {"path": UNIT_PATH, "line": 6}
    execstart = only(report, "systemd-execstart")
    assert execstart["severity"] == "error"
    assert execstart["title"] == (
        "nobody cannot execute the ExecStart= program /srv/shop/venv/bin/gunicorn"
    )
    assert "status=203/EXEC" in execstart["detail"]


@pytest.mark.fires("systemd-workdir")
def test_workdir_not_listable(tmp_path):
    unit = service(replace={"User=www-data\nGroup=www-data\n": "User=nobody\n"})
    root = make_tree(tmp_path, unit)
    shop = root / "srv" / "shop"
    os.chown(shop, OTHER_UID, OTHER_UID)
    shop.chmod(0o711)

    report = check_tree(root)

    finding = only(report, "systemd-workdir")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "nobody can enter WorkingDirectory /srv/shop but cannot list it"
    )
    assert "ModuleNotFoundError" in finding["detail"]


@pytest.mark.fires("systemd-workdir")
@pytest.mark.parametrize(
    ("value", "severity", "title"),
    [
        ("/srv/gone", "error", "WorkingDirectory /srv/gone does not exist"),
        (
            "-/srv/gone",
            "warning",
            "WorkingDirectory /srv/gone does not exist, so gunicorn starts in /",
        ),
    ],
)
def test_workdir_missing(tmp_path, value, severity, title):
    root = make_tree(
        tmp_path,
        service(replace={"WorkingDirectory=/srv/shop": f"WorkingDirectory={value}"}),
    )

    report = check_tree(root, "--chdir", "/srv/shop", "--unit", UNIT_PATH)

    finding = only(report, "systemd-workdir")
    assert finding["severity"] == severity
    assert finding["title"] == title
    assert finding["fix"].startswith(
        "Create it (install -d -o www-data -g www-data -m 0755 /srv/gone)"
    )


@pytest.mark.quiet("systemd-workdir")
def test_workdir_home_of_user(tmp_path):
    unit = service(
        replace={
            "User=www-data\nGroup=www-data\n": "User=deploy\n",
            "WorkingDirectory=/srv/shop": "WorkingDirectory=~",
        }
    )
    root = make_tree(tmp_path, unit)
    (root / "home" / "deploy").mkdir(parents=True)

    report = check_tree(root, "--chdir", "/srv/shop", "--unit", UNIT_PATH)

    finding = only(report, "systemd-workdir")
    assert finding["severity"] == "ok"
    assert finding["title"] == "deploy can enter and list WorkingDirectory /home/deploy"


@pytest.mark.fires("systemd-workdir")
def test_no_working_directory(tmp_path):
    root = make_tree(tmp_path, service(drop=("WorkingDirectory",)))

    report = check_tree(root, "--chdir", "/srv/shop", "--unit", UNIT_PATH)

    finding = only(report, "systemd-workdir")
    assert finding["severity"] == "warning"
    assert (
        finding["title"]
        == "shop.service sets no WorkingDirectory=, so gunicorn starts in /"
    )
    assert (
        finding["fix"]
        == "WorkingDirectory=/srv/shop  (in [Service], next to ExecStart=)"
    )
    assert finding["location"] == {"path": UNIT_PATH, "line": 7}


# --- systemd-execstart ------------------------------------------------------------


@pytest.mark.fires("systemd-execstart")
def test_execstart_program_missing(tmp_path):
    root = make_tree(tmp_path, service())
    (root / "srv/shop/venv/bin/gunicorn").unlink()

    report = check_tree(root)

    finding = only(report, "systemd-execstart")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "the ExecStart= program /srv/shop/venv/bin/gunicorn does not exist"
    )
    assert "status=203/EXEC" in finding["detail"]
    assert finding["location"] == {"path": UNIT_PATH, "line": 8}


@pytest.mark.fires("systemd-execstart")
def test_execstart_program_not_executable(tmp_path):
    root = make_tree(tmp_path, service())
    (root / "srv/shop/venv/bin/gunicorn").chmod(0o644)

    report = check_tree(root)

    finding = only(report, "systemd-execstart")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "www-data cannot execute the ExecStart= program /srv/shop/venv/bin/gunicorn"
    )
    assert finding["fix"] == "chmod a+rx /srv/shop/venv/bin/gunicorn"
    assert "-rw-r--r-- root root /srv/shop/venv/bin/gunicorn" in finding["evidence"]


@pytest.mark.fires("systemd-execstart")
def test_execstart_bare_name_not_found(tmp_path):
    root = make_tree(
        tmp_path, service(replace={EXEC_START: "ExecStart=gunicorn app:app\n"})
    )

    report = check_tree(root)

    finding = only(report, "systemd-execstart")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "ExecStart= names 'gunicorn', which is not in systemd's search path"
    )


@pytest.mark.quiet("systemd-execstart")
def test_execstart_bare_name_found(tmp_path):
    root = make_tree(
        tmp_path, service(replace={EXEC_START: "ExecStart=gunicorn app:app\n"})
    )
    program = root / "usr/bin/gunicorn"
    program.parent.mkdir(parents=True)
    program.write_bytes(b"\x7fELF stands in for a binary\n")
    program.chmod(0o755)

    report = check_tree(root)

    first, second = findings_of(report, "systemd-execstart")
    assert first["severity"] == "warning"
    assert (
        first["title"] == "ExecStart= names 'gunicorn': systemd runs /usr/bin/gunicorn"
    )
    assert second["severity"] == "ok"
    assert second["title"] == (
        "www-data can execute the ExecStart= program /usr/bin/gunicorn"
    )


# --- systemd-user -----------------------------------------------------------------


@pytest.mark.fires("systemd-user")
def test_user_missing(tmp_path):
    root = make_tree(
        tmp_path, service(replace={"User=www-data": "User=shop"}, drop=("Group",))
    )

    report = check_tree(root)

    finding = only(report, "systemd-user")
    assert finding["severity"] == "error"
    assert finding["title"] == "the user shop (User=) does not exist"
    assert "status=217/USER" in finding["detail"]
    assert finding["location"] == {"path": UNIT_PATH, "line": 5}
    workdir = only(report, "systemd-workdir")
    assert workdir["severity"] == "skipped"


@pytest.mark.fires("systemd-user")
def test_group_missing(tmp_path):
    root = make_tree(tmp_path, service(replace={"Group=www-data": "Group=shop"}))

    report = check_tree(root)

    finding = only(report, "systemd-user")
    assert finding["severity"] == "error"
    assert finding["title"] == "the group shop (Group=) does not exist"
    assert "status=216/GROUP" in finding["detail"]
    assert finding["fix"] == "groupadd --system shop, or correct Group="


@pytest.mark.fires("systemd-user")
def test_no_user_runs_as_root(tmp_path):
    root = make_tree(
        tmp_path,
        service(drop=("User", "Group")),
        config='bind = "127.0.0.1:8000"\nuser = "www-data"\n',
    )

    report = check_tree(root)

    finding = only(report, "systemd-user")
    assert finding["severity"] == "warning"
    assert finding["title"] == "gunicorn's master runs as root"
    assert "switches only the workers, not the master" in finding["detail"]
    assert finding["fix"].startswith("User=www-data\nGroup=www-data\n")


@pytest.mark.fires("systemd-user")
def test_dynamic_user(tmp_path):
    root = make_tree(tmp_path, service(drop=("User", "Group"), add="DynamicUser=yes\n"))

    report = check_tree(root)

    finding = only(report, "systemd-user")
    assert finding["severity"] == "info"
    assert finding["title"] == (
        "DynamicUser=yes: systemd runs shop.service as the transient user shop"
    )
    assert "ProtectSystem=strict" in finding["detail"]
    assert only(report, "systemd-workdir")["severity"] == "ok"


# --- systemd-type -----------------------------------------------------------------


@pytest.mark.fires("systemd-type")
def test_forking_without_daemon(tmp_path):
    root = make_tree(tmp_path, service(add="Type=forking\nPIDFile=/run/shop.pid\n"))

    report = check_tree(root)

    finding = only(report, "systemd-type")
    assert finding["severity"] == "error"
    assert finding["title"] == "Type=forking, but gunicorn stays in the foreground"
    assert "TimeoutStartSec=" in finding["detail"]
    assert finding["location"] == {"path": UNIT_PATH, "line": 5}
    assert "daemon = False (default)" in finding["evidence"]


@pytest.mark.fires("systemd-type")
@pytest.mark.parametrize(
    ("kind", "title"),
    [
        ("oneshot", "Type=oneshot waits for gunicorn to exit, which it never does"),
        (
            "dbus",
            "Type=dbus waits for gunicorn to take a D-Bus name, which it never does",
        ),
    ],
)
def test_types_gunicorn_never_satisfies(tmp_path, kind, title):
    root = make_tree(tmp_path, service(add=f"Type={kind}\n"))

    report = check_tree(root)

    finding = only(report, "systemd-type")
    assert finding["severity"] == "error"
    assert finding["title"] == title


@pytest.mark.fires("systemd-type")
def test_notify_through_shell_without_exec(tmp_path):
    command = (
        "ExecStart=/bin/sh -c 'cd /srv/shop && /srv/shop/venv/bin/gunicorn app:app'\n"
    )
    root = make_tree(
        tmp_path, service(add="Type=notify\n", replace={EXEC_START: command})
    )

    report = check_tree(root)

    finding = by_title(report, "systemd-type", "READY=1 comes from a child")
    assert finding["severity"] == "error"
    assert "NotifyAccess=all" in finding["fix"]


@pytest.mark.quiet("systemd-type")
def test_simple_with_daemon_points_at_config_daemon(tmp_path):
    root = make_tree(
        tmp_path, service(), config='bind = "127.0.0.1:8000"\ndaemon = True\n'
    )

    report = check_tree(root)

    finding = only(report, "systemd-type")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        "Type=simple is right for gunicorn; its daemon setting is what to change"
    )
    assert "config-daemon" in finding["detail"]


@pytest.fixture(scope="session")
def venv_gunicorn_19(tmp_path_factory) -> Path:
    """Return a venv with gunicorn 19.9.0, the last release without sd_notify."""
    base = tmp_path_factory.mktemp("venv-gunicorn-19")
    return make_venv(base / "venv", "gunicorn==19.9.0")


def check_live_notify(tmp_path: Path, venv: Path) -> dict:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(APP_SOURCE)
    unit = tmp_path / "shop.service"
    unit.write_text(
        "[Service]\nType=notify\n"
        f"WorkingDirectory={app}\nExecStart={venv}/bin/gunicorn app:app\n"
    )
    report, result = run_json(
        "check", "--unit", str(unit), "--select", "systemd-type", "--static"
    )
    assert result.returncode in (0, 1), result.stderr
    return report


@pytest.mark.fires("systemd-type")
def test_notify_with_gunicorn_19(tmp_path, venv_gunicorn_19):
    report = check_live_notify(tmp_path, venv_gunicorn_19)

    finding = only(report, "systemd-type")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "Type=notify, but gunicorn 19.9.0 never reports readiness"
    )
    assert finding["fix"] == (
        "Upgrade gunicorn: pip install 'gunicorn>=20', or use Type=simple"
    )


@pytest.mark.quiet("systemd-type")
def test_notify_with_gunicorn_27(tmp_path, venv_gunicorn_new):
    report = check_live_notify(tmp_path, venv_gunicorn_new)

    finding = only(report, "systemd-type")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        "Type=notify: gunicorn 27.0.1 tells systemd when it is ready"
    )


# --- systemd-restart --------------------------------------------------------------


@pytest.mark.fires("systemd-restart")
@pytest.mark.parametrize(
    ("line", "title"),
    [
        (None, "shop.service sets no Restart=, so a crashed gunicorn stays down"),
        ("Restart=no", "Restart=no: a crashed gunicorn stays down"),
        (
            "Restart=on-success",
            "Restart=on-success does not restart gunicorn after it fails",
        ),
        (
            "Restart=sometimes",
            (
                "Restart=sometimes is not a valid value, so systemd does not"
                " restart gunicorn"
            ),
        ),
    ],
)
def test_restart_leaves_gunicorn_down(tmp_path, line, title):
    replace = {"Restart=on-failure\n": f"{line}\n" if line else ""}
    root = make_tree(tmp_path, service(replace=replace))

    report = check_tree(root)

    finding = only(report, "systemd-restart")
    assert finding["severity"] == "warning"
    assert finding["title"] == title
    assert finding["fix"].startswith("Restart=on-failure")


@pytest.mark.quiet("systemd-restart")
def test_restart_always(tmp_path):
    root = make_tree(
        tmp_path, service(replace={"Restart=on-failure": "Restart=always"})
    )

    report = check_tree(root)

    finding = only(report, "systemd-restart")
    assert finding["severity"] == "ok"
    assert finding["title"] == "Restart=always: systemd restarts gunicorn when it dies"


# --- systemd-reload ---------------------------------------------------------------

RELOAD_LINE = "ExecReload=/bin/kill -s HUP $MAINPID\n"


@pytest.mark.fires("systemd-reload")
def test_reload_missing(tmp_path):
    root = make_tree(tmp_path, service(replace={RELOAD_LINE: ""}))

    report = check_tree(root)

    finding = only(report, "systemd-reload")
    assert finding["severity"] == "info"
    assert "Job type reload is not applicable" in finding["detail"]
    assert finding["fix"].startswith("ExecReload=/bin/kill -s HUP $MAINPID")


@pytest.mark.fires("systemd-reload")
@pytest.mark.parametrize(
    ("line", "title"),
    [
        (
            "ExecReload=/bin/kill -USR2 $MAINPID",
            "ExecReload= sends SIGUSR2, not SIGHUP",
        ),
        ("ExecReload=/bin/kill $MAINPID", "ExecReload= sends SIGTERM, not SIGHUP"),
        (
            "ExecReload=/bin/kill -HUP $(cat /run/shop.pid)",
            "ExecReload= uses shell syntax, but systemd runs no shell",
        ),
        (
            "ExecReload=/usr/bin/pkill -HUP -f gunicorn",
            "ExecReload= uses pkill, which signals every gunicorn process",
        ),
        (
            "ExecReload=/bin/systemctl kill -s HUP shop.service",
            "ExecReload= uses systemctl, which signals every gunicorn process",
        ),
    ],
)
def test_reload_wrong_signal_or_target(tmp_path, line, title):
    root = make_tree(tmp_path, service(replace={RELOAD_LINE: line + "\n"}))

    report = check_tree(root)

    finding = only(report, "systemd-reload")
    assert finding["severity"] == "warning"
    assert finding["title"] == title
    assert finding["location"] == {"path": UNIT_PATH, "line": 9}


@pytest.mark.quiet("systemd-reload")
@pytest.mark.parametrize(
    "line",
    [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecReload=/usr/bin/kill --signal=SIGHUP ${MAINPID}",
        "ExecReload=/bin/kill -1 $MAINPID",
        "ExecReload=/bin/sh -c 'kill -HUP $(cat /run/shop.pid)'",
        "ExecReload=/bin/systemctl kill --kill-whom=main -s HUP shop.service",
    ],
)
def test_reload_sends_hup(tmp_path, line):
    root = make_tree(tmp_path, service(replace={RELOAD_LINE: line + "\n"}))

    report = check_tree(root)

    finding = only(report, "systemd-reload")
    assert finding["severity"] == "ok"
    assert finding["title"] == "ExecReload= sends SIGHUP to gunicorn's master"


# --- systemd-killmode -------------------------------------------------------------


@pytest.mark.fires("systemd-killmode")
@pytest.mark.parametrize("mode", ["process", "none"])
def test_kill_mode_leaves_workers(tmp_path, mode):
    root = make_tree(tmp_path, service(add=f"KillMode={mode}\n"))

    report = check_tree(root)

    finding = only(report, "systemd-killmode")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        f"KillMode={mode} can leave gunicorn's workers running after a stop"
    )
    assert "Connection in use" in finding["detail"]
    assert finding["location"] == {"path": UNIT_PATH, "line": 5}


@pytest.mark.fires("systemd-killmode")
def test_kill_signal_hup(tmp_path):
    root = make_tree(tmp_path, service(add="KillSignal=SIGHUP\n"))

    report = check_tree(root)

    finding = only(report, "systemd-killmode")
    assert finding["severity"] == "warning"
    assert finding["title"] == "KillSignal=SIGHUP: systemd stops gunicorn with SIGHUP"
    assert "reload instead of stopping" in finding["detail"]


@pytest.mark.quiet("systemd-killmode")
def test_kill_mode_mixed(tmp_path):
    root = make_tree(tmp_path, service(add="KillMode=mixed\nKillSignal=SIGINT\n"))

    report = check_tree(root)

    finding = only(report, "systemd-killmode")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        "KillMode=mixed: a stop reaches the master and every worker"
    )


# --- systemd-runtime-dir ----------------------------------------------------------


@pytest.mark.fires("systemd-runtime-dir")
def test_absolute_runtime_directory(tmp_path):
    root = make_tree(
        tmp_path,
        service(add="RuntimeDirectory=/run/shop\n"),
        config='bind = "unix:/run/shop/shop.sock"\n',
    )

    report = check_tree(root)

    finding = only(report, "systemd-runtime-dir")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "systemd ignores RuntimeDirectory=/run/shop: it must be a relative name"
    )
    assert "/run/shop/shop.sock" in finding["detail"]
    assert finding["fix"] == "RuntimeDirectory=shop  (a name relative to /run)"
    assert finding["location"] == {"path": UNIT_PATH, "line": 5}


@pytest.mark.fires("systemd-runtime-dir")
def test_mkdir_in_exec_start_pre(tmp_path):
    root = make_tree(tmp_path, service(add="ExecStartPre=/bin/mkdir -p /run/shop\n"))
    (root / "run").mkdir(mode=0o755)

    report = check_tree(root)

    finding = only(report, "systemd-runtime-dir")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "ExecStartPre= runs mkdir on /run/shop as www-data, who cannot write to /run"
    )
    assert "drwxr-xr-x root root /run" in finding["evidence"]
    assert finding["fix"].startswith("RuntimeDirectory=shop")


@pytest.mark.quiet("systemd-runtime-dir")
def test_runtime_directory_name(tmp_path):
    root = make_tree(
        tmp_path,
        service(
            add="RuntimeDirectory=shop\n"
            "ExecStartPre=/bin/mkdir -p /run/shop/sockets\n"
            "ExecStartPre=+/bin/mkdir -p /run/other\n"
        ),
        config='bind = "unix:/run/shop/shop.sock"\n',
    )

    report = check_tree(root)

    finding = only(report, "systemd-runtime-dir")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        "systemd creates /run/shop at each start, owned by www-data"
    )


# --- systemd-environment ----------------------------------------------------------


@pytest.mark.fires("systemd-environment")
def test_environment_file_missing(tmp_path):
    root = make_tree(tmp_path, service(add="EnvironmentFile=/etc/shop/env\n"))

    report = check_tree(root)

    finding = only(report, "systemd-environment")
    assert finding["severity"] == "error"
    assert finding["title"] == "EnvironmentFile /etc/shop/env does not exist"
    assert "Failed to load environment files" in finding["detail"]
    assert finding["fix"] == (
        "Create /etc/shop/env (mode 0600, owned by root), or mark it optional:"
        " EnvironmentFile=-/etc/shop/env"
    )


@pytest.mark.fires("systemd-environment")
def test_environment_file_lines_and_mode(tmp_path):
    root = make_tree(tmp_path, service(add="EnvironmentFile=/etc/shop/env\n"))
    env = root / "etc" / "shop" / "env"
    env.parent.mkdir()
    env.write_text(
        "DEBUG=0  # off in production\n"
        "export SECRET_KEY=s3cr3t-value\n"
        "DATABASE_PASSWORD=hunter2\n"
    )
    env.chmod(0o644)

    report = check_tree(root)

    comment = by_title(report, "systemd-environment", "a comment on env:1")
    assert comment["severity"] == "warning"
    assert comment["title"] == "a comment on env:1 becomes part of the value of DEBUG"
    assert comment["location"] == {"path": "/etc/shop/env", "line": 1}
    export = by_title(report, "systemd-environment", "systemd misreads env:2")
    assert "remove 'export '" in export["fix"].lower()
    readable = by_title(report, "systemd-environment", "every local user can read")
    assert readable["title"] == (
        "EnvironmentFile /etc/shop/env sets DATABASE_PASSWORD and every local user"
        " can read it"
    )
    assert readable["fix"] == (
        "chown root:root /etc/shop/env && chmod 0600 /etc/shop/env"
    )
    shown = json.dumps(report)
    assert "hunter2" not in shown
    assert "s3cr3t-value" not in shown


@pytest.mark.fires("systemd-environment")
def test_secret_in_unit_environment(tmp_path):
    root = make_tree(tmp_path, service(add='Environment="SECRET_KEY=abc123xyz"\n'))

    report = check_tree(root)

    finding = only(report, "systemd-environment")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        "Environment= on shop.service:5 sets SECRET_KEY, which every local user"
        " can read"
    )
    assert finding["fix"].startswith("Move SECRET_KEY to an EnvironmentFile")
    assert "abc123xyz" not in json.dumps(report)


@pytest.mark.quiet("systemd-environment")
def test_private_environment_file(tmp_path):
    root = make_tree(tmp_path, service(add="EnvironmentFile=/etc/shop/env\n"))
    env = root / "etc" / "shop" / "env"
    env.parent.mkdir()
    env.write_text("# the shop's secrets\nSECRET_KEY=abc123xyz\n")
    env.chmod(0o600)

    report = check_tree(root)

    finding = only(report, "systemd-environment")
    assert finding["severity"] == "ok"
    assert (
        finding["detail"] == "EnvironmentFile= files read: /etc/shop/env (1 variables)."
    )
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


# --- the CLI on a --unit file -------------------------------------------------------


def test_unit_file_outside_unit_dirs(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(APP_SOURCE)
    unit = tmp_path / "shop.service"
    unit.write_text(
        textwrap.dedent(
            f"""\
            [Service]
            User=nobody
            WorkingDirectory={app}
            ExecStart={app}/venv/bin/gunicorn app:app
            """
        )
    )

    result = run_doctor(
        "check",
        "--unit",
        str(unit),
        "--select",
        "systemd",
        "--static",
        "--format",
        "json",
    )

    report = json.loads(result.stdout)
    assert result.returncode == 1
    workdir = only(report, "systemd-workdir")
    # pytest's tmp_path directories have mode 0700 and belong to root.
    assert workdir["severity"] == "error"
    assert workdir["title"].startswith("nobody cannot enter WorkingDirectory")
    restart = only(report, "systemd-restart")
    assert restart["severity"] == "warning"
