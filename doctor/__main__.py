"""Entry point of ``gunicorn-doctor`` and ``python -m doctor``.

``--version`` is answered before typer, rich or any check is imported, so it
costs no more than starting Python. ``check`` starts its settings probe
before typer is imported (see ``doctor.headstart``).
"""

import gc
import signal
import sys

# Exit status of a command ended by SIGINT, as shells report it.
INTERRUPTED = 128 + signal.SIGINT


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from doctor import __version__

        print(f"gunicorn-doctor {__version__}")
        return
    # A run takes well under a second and leaves little cyclic garbage:
    # its data are module objects, parsed files and findings that live until
    # the report is printed. The collector would spend about 15 ms of a
    # check's CPU time walking them, 74 times, and free nothing that matters.
    gc.disable()
    # SIGTERM and SIGHUP would end Python without running its exit handlers,
    # and those kill the probes still running. As SystemExit, they run.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    try:
        if sys.argv[1:2] == ["check"]:
            from doctor.headstart import begin

            begin(sys.argv[2:])
        from doctor.cli import run

        run()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    finally:
        # The interpreter collects again at exit. Frozen objects are skipped,
        # which saves about 25 ms of a check's exit.
        gc.freeze()


def _exit_on_signal(signum: int, frame) -> None:
    sys.exit(128 + signum)


if __name__ == "__main__":
    main()
