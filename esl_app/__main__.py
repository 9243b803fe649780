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
    """Run the ``ivr`` command."""
    from esl_app.cli import cli

    cli()


if __name__ == "__main__":
    main()
