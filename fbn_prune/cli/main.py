"""The fbn-prune command group: the error boundary, logging and the list of commands.

The ``fbn-prune`` command group: its error boundary (one line per user error, and its exit code),
logging, and the list of commands; each command lives in its own module of fbn_prune/cli/.

Exit codes: 0 ok, 2 bad input, 3 evaluation gate failed, 4 verification failed.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback

import click

from fbn_prune import __version__
from fbn_prune._runtime import world
from fbn_prune.cli.eval import eval_command
from fbn_prune.cli.gguf import export_gguf_command
from fbn_prune.cli.heal import heal_command
from fbn_prune.cli.inspection import inspect_command
from fbn_prune.cli.prune import networks_command, prune_command, select_command
from fbn_prune.cli.search import search_command
from fbn_prune.cli.ship import push_command, recipes_command
from fbn_prune.cli.tasks import tasks_command
from fbn_prune.errors import EXIT_BAD_INPUT, GateFailed, UserError, VerificationError, disk_error_message

log = logging.getLogger("fbn_prune")

DISTRIBUTED_COMMANDS = ("prune", "networks")
"""The commands that run across the processes of torchrun / accelerate launch (capture and decomposition)."""

def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fbn_prune").setLevel(level)
    try:
        import transformers  # heavy: its logging is set only once a command runs

        transformers.logging.set_verbosity_error() if verbose < 2 else transformers.logging.set_verbosity_info()
    except ImportError:  # pragma: no cover
        pass


class Interrupted(Exception):
    """Ctrl-C inside a command (click would print its own blank line and "Aborted!")."""


class Group(click.Group):
    """The error boundary of every command: each failure a user can cause (a UserError, a failed gate or
    verification, a full disk or file-size limit, a bad option) becomes ONE line on stderr,
    ``error: ...``, and its exit code; with -vv the traceback comes first. Internal bugs are not
    caught: they keep their traceback and exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise Interrupted(str(e)) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0  # click returns the code of ctx.exit(code)
        except Interrupted as e:
            click.echo(f"interrupted: {e}." if str(e) else "interrupted.", err=True)
            code = 130
        except click.exceptions.Abort:
            click.echo("interrupted.", err=True)
            code = 130
        except world.Relayed as e:  # another rank failed and said so: this one stops quietly
            code = e.exit_code
        except world.Stopped:  # the launcher stopped this rank because another one failed
            line = world.stopped_message()
            if line is not None:
                click.echo(f"error: {world.current().label()}: {line}", err=True)
            code = 1
        except BaseException as e:  # noqa: BLE001 - sorted below; what is not a user's failure is re-raised
            line, code = _user_failure(e)
            if line is None:
                world.record_failure(f"{type(e).__name__}: {e}")
                raise
            if _verbosity(argv) >= 2:
                traceback.print_exception(e)
            if world.current().distributed and not isinstance(e, world.RankLost):  # say which rank; others stay quiet
                line = f"{world.current().label()}: {line}"
                world.record_failure(line)
            if line is not None and not world.echoes_shared_errors():  # before joining, ranks fail alike:
                line = f"{world.wait_for_main_to_report()}: {line}"  # rank 0 says it once, this rank is stopped
            if line is not None:
                click.echo(f"error: {line}", err=True)
        if not standalone_mode:
            return code
        sys.exit(code)


def _user_failure(e: BaseException) -> tuple[str | None, int]:
    """(one line, exit code) for a failure the user caused, (None, 1) for anything else."""
    if isinstance(e, (UserError, VerificationError, GateFailed, world.RankLost)):
        return _one_line(str(e)), e.exit_code
    if isinstance(e, click.BadParameter):
        return _bad_parameter(e), e.exit_code
    if isinstance(e, click.ClickException):  # usage errors: no such option, missing argument, ...
        return _one_line(e.format_message()), e.exit_code
    if isinstance(e, OSError) and (line := disk_error_message(e)):
        return line, EXIT_BAD_INPUT
    return None, 1


def _bad_parameter(e: click.BadParameter) -> str:
    """``--layout: 'x' is not one of uniform, padded, exact``: the option, then click's reason."""
    param = e.param
    if isinstance(e.param_hint, str):
        name = e.param_hint
    elif param is not None and param.param_type_name == "option":
        name = "/".join(param.opts)
    else:
        name = (param.human_readable_name if param is not None else "argument").upper()
    message = e.message.rstrip(".")
    if param is not None and isinstance(param.type, click.Choice) and " is not one of " in message:
        value = message.split(" is not one of ")[0]
        message = f"{value} is not one of {', '.join(map(str, param.type.choices))}"
    return _one_line(f"{name.strip(chr(39))}: {message}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _verbosity(argv: list[str]) -> int:
    """How many -v the command line gives before the command name (the group's option)."""
    count = 0
    for arg in argv:
        if not arg.startswith("-"):
            break
        if arg == "--verbose":
            count += 1
        elif re.fullmatch(r"-v+", arg):
            count += len(arg) - 1
    return count


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fbn-prune")
@click.option("-v", "--verbose", count=True, help="Log what is happening (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """fbn_prune: keep the functional networks your task needs, cut the rest of the FFN neurons,
    and write a smaller, verified safetensors checkpoint.

    \b
    Exit codes: 0 ok, 2 bad input, 3 evaluation gate failed, 4 verification failed.
    """
    _setup_logging(verbose)
    ctx.obj = {"verbose": verbose}
    if world.launched() and ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        raise UserError(f"`fbn-prune {ctx.invoked_subcommand}` runs in one process; under torchrun or accelerate "
                        f"launch only {' and '.join(DISTRIBUTED_COMMANDS)} run (see docs/scale-out.md).")



cli.add_command(prune_command, "prune")
cli.add_command(networks_command, "networks")
cli.add_command(select_command, "select")
cli.add_command(inspect_command, "inspect")
cli.add_command(eval_command, "eval")
cli.add_command(search_command, "search")
cli.add_command(push_command, "push")
cli.add_command(recipes_command, "recipes")
cli.add_command(export_gguf_command, "export-gguf")
cli.add_command(heal_command, "heal")
cli.add_command(tasks_command, "tasks")
