"""Every registered check has a test where it fires and one where it stays quiet."""

import pytest

from doctor.registry import load_registry


def _marked(session: pytest.Session, marker: str) -> set[str]:
    ids = set()
    for item in session.items:
        for mark in item.iter_markers(marker):
            ids.update(mark.args)
    return ids


def test_every_check_fires_and_stays_quiet(request):
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("needs the whole suite collected")
    collected = {item.path.name for item in request.session.items}
    if len(collected) < 5:
        pytest.skip("needs the whole suite collected")
    registered = set(load_registry().checks)
    fires = _marked(request.session, "fires")
    quiet = _marked(request.session, "quiet")
    assert sorted(registered - fires) == [], "checks with no test where they fire"
    assert sorted(registered - quiet) == [], "checks with no test where they are quiet"
    assert sorted((fires | quiet) - registered) == [], "markers naming unknown checks"
