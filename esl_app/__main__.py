"""Console entry point: monkey-patch first, then hand over to the click CLI."""

from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402

patch_psycopg()


def main() -> None:
    """Run the ``ivr`` command."""
    from esl_app.cli import cli

    cli()


if __name__ == "__main__":
    main()
