"""`autocnn` command line. Every user mistake ends as one line on stderr and exit code 2."""
from __future__ import annotations

import sys

import click

from autocnn.errors import AutocnnError


def one_line(message: str) -> str:
    """Escapes line breaks and other control characters: user input quoted in a message (a YAML key
    holding a carriage return, say) must not split the promised single stderr line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


class UserFacingGroup(click.Group):
    """Turns AutocnnError (and click usage errors) into a single stderr line with exit code 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            hint = f"; see 'autocnn {exc.ctx.info_name if exc.ctx else ''} --help'".replace(" autocnn", "")
            click.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
            sys.exit(2)
        except AutocnnError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(2)


@click.group(cls=UserFacingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autocnn")
def cli() -> None:
    """Neural-architecture search for convolutional image classifiers."""


from autocnn.cli import models, search, studies  # noqa: E402,F401  (command registration)
from autocnn.cli import dashboard  # noqa: E402,F401  (command registration)
from autocnn.cli import export  # noqa: E402,F401  (command registration)


def main() -> None:
    cli()
