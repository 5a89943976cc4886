"""Path and user lookups under a filesystem root."""

import os

from doctor.rootfs import RootFS


def make_tree(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3.11").write_text("")
    bin_dir = tmp_path / "srv/app/venv/bin"
    bin_dir.mkdir(parents=True)
    os.symlink("/usr/bin/python3.11", bin_dir / "python3")
    os.symlink("python3", bin_dir / "python")
    os.symlink("/usr/bin/python3.9", bin_dir / "python3.9")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
        "broken line\n"
    )
    (tmp_path / "etc/group").write_text("www-data:x:33:deploy\ndeploy:x:1000:\n")
    return RootFS(tmp_path)


def test_absolute_symlink_resolves_inside_root(tmp_path):
    fs = make_tree(tmp_path)
    assert fs.resolve("/srv/app/venv/bin/python") == ("/usr/bin/python3.11", None)


def test_dangling_symlink_named(tmp_path):
    fs = make_tree(tmp_path)
    resolved, problem = fs.resolve("/srv/app/venv/bin/python3.9")
    assert resolved == "/usr/bin/python3.9"
    assert (
        problem == "dangling symlink /srv/app/venv/bin/python3.9 -> /usr/bin/python3.9"
    )


def test_symlink_loop_detected(tmp_path):
    fs = RootFS(tmp_path)
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    _, problem = fs.resolve("/a")
    assert problem.startswith("symlink loop")


def test_users_and_groups_from_root(tmp_path):
    fs = make_tree(tmp_path)
    user = fs.user("www-data")
    assert user.uid == 33
    assert fs.user(33).name == "www-data"
    assert fs.user("nobody") is None
    assert fs.group_ids(user) == {33}


def test_host_and_display_paths(tmp_path):
    fs = RootFS(tmp_path)
    assert fs.host("/etc/passwd") == tmp_path / "etc/passwd"
    assert fs.display(tmp_path / "etc/passwd") == "/etc/passwd"
    assert RootFS("/").host("/etc/passwd").as_posix() == "/etc/passwd"
