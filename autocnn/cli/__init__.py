"""`autocnn` command line. Every user mistake ends as one line on stderr and exit code 2."""
from __future__ import annotations

import importlib
import sys

import click

from autocnn.errors import AutocnnError


def one_line(message: str) -> str:
    """Escapes line breaks and other control characters: user input quoted in a message (a YAML key
    holding a carriage return, say) must not split the promised single stderr line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


COMMANDS = {
    "best": "autocnn.cli.studies", "dashboard": "autocnn.cli.dashboard", "export": "autocnn.cli.export",
    "models": "autocnn.cli.models", "report": "autocnn.cli.studies", "search": "autocnn.cli.search",
    "show": "autocnn.cli.models", "studies": "autocnn.cli.studies", "supernet": "autocnn.cli.supernet", "train": "autocnn.cli.search",
}
"""Command -> the module that defines it, imported when the command runs: `autocnn --help` or `autocnn studies`
need not import torch (seconds) for `search` and `models`."""


class UserFacingGroup(click.Group):
    """Turns AutocnnError (and click usage errors) into a single stderr line with exit code 2; loads each
    command's module on first use (`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(COMMANDS[name])
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the docstrings' first lines, read without importing the modules."""
        from autocnn.cli.lazyhelp import short_help

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)  # as click.Group's own listing
        rows = [(name, self.commands[name].get_short_help_str(limit) if name in self.commands
                 else short_help(COMMANDS[name], name, limit)) for name in names]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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



def main() -> None:
    cli()
