"""Entry point of ``gunicorn-doctor`` and ``python -m doctor``.

``--version`` is answered before typer, rich or any check is imported, so it
costs no more than starting Python. ``check`` starts its settings probe
before typer is imported (see ``doctor.headstart``).
"""

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from doctor import __version__

        print(f"gunicorn-doctor {__version__}")
        return
    if sys.argv[1:2] == ["check"]:
        from doctor.headstart import begin

        begin(sys.argv[2:])
    from doctor.cli import run

    run()


if __name__ == "__main__":
    main()
