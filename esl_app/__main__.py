"""Console entry point: monkey-patch first, then hand over to the click CLI."""

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402

# No spawning stacks: capturing one per spawn costs time and leaves ~10 objects per
# greenlet for the cyclic GC (its pauses stop the hub); nothing here reads them.
gevent.config.track_greenlet_tree = False

from psycogreen.gevent import patch_psycopg  # noqa: E402

patch_psycopg()


def main() -> None:
    """Run the ``ivr`` command; the last word on errors no command caught itself.

    A reader that went away (``ivr calls list | head``) ends the command quietly with exit
    1 (click's own convention, which handles most such cases before they get here); a
    database that fails mid-command is one line and exit 3, like one that cannot be opened.
    """
    import os
    import sys

    import peewee

    from esl_app.cli import EXIT_UNAVAILABLE, cli
    from esl_app.db import one_line

    try:
        cli(prog_name="ivr")
    except BrokenPipeError:
        # stdout is gone: point it at /dev/null so the interpreter's final flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        sys.stderr.write(f"error: database: {one_line(exc)}\n")
        sys.exit(EXIT_UNAVAILABLE)


if __name__ == "__main__":
    main()
