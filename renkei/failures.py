"""The expected failures of the ``renkei`` command, each shown in one line: its code, what
went wrong and what to do.

An expected failure (the box not running, a command line that is not valid, an unknown
institution, a configuration or a file that cannot be used, a coded refusal of a node, of the
hub or of the control API) ends a command with one line on standard error::

    error: NetworkUnavailable: The network could not be reached: ... — Start the box ...

and status 1 (2 for a command line that is not valid, as click does). Anything else is a bug
and shows its traceback. `expected` tells the two apart; `CommandGroup` applies it to every
command of the ``renkei`` group, and `usage_line` gives the line of a ``twistd renkei`` option
that is not valid. The codes are those of `codes.errors` (docs/protocol.md §12).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from codes import errors
from codes.errors import ErrorKind, RenkeiError
from middleware.config import ConfigError, UnknownMember

__all__ = [
    "BOX",
    "DEFAULT_REMEDY",
    "LIST_FROM_THE_HUB",
    "REMEDIES",
    "CommandFailed",
    "CommandGroup",
    "UsageFailed",
    "expected",
    "usage_line",
]

BOX = "Start the box (make run), or give -c the configuration it runs with"
LIST_FROM_THE_HUB = (
    "Check that the hub runs: the node fetches the list again every second until it has one."
)
# What to do about each code, when the failure does not say better itself.
REMEDIES: dict[str, str] = {
    errors.NETWORK_UNAVAILABLE.code: f"{BOX}; a party being restarted answers in a moment.",
    errors.CONFIGURATION_INVALID.code: "Give -c the network's configuration (twistd.conf in "
    'the repository), or fix it (docs/operations.md, "The configuration file").',
    errors.FILE_UNUSABLE.code: "Check the path and the file's content.",
    errors.RESULT_FILE_EXISTS.code: "Give --force to replace it, or --output another file.",
    errors.DATABASE_UNAVAILABLE.code: "Start the box once (make run makes its databases), or "
    "check that the database server of its URL accepts connections.",
    errors.WAIT_TIMED_OUT.code: "It may still end: look again later, or wait longer.",
    errors.BULK_QUERY_FILE_INVALID.code: "Fix the file (docs/bulk-query.md, §1) and send it again.",
    errors.BULK_QUERY_LINE_INVALID.code: "The result file says why for each line: fix them "
    "(docs/bulk-query.md, §1) and send the file again.",
    errors.UNKNOWN_BULK_QUERY.code: "Give the id printed when the file was sent, with the "
    "institution and the --system that sent it.",
    errors.PERMITTED_LIST_MISSING.code: LIST_FROM_THE_HUB,
    errors.PERMITTED_LIST_EXPIRED.code: LIST_FROM_THE_HUB,
    errors.NOT_PERMITTED.code: "The permitted-query list does not allow this query "
    "(simulators/network/data/permitted_list.csv).",
    errors.SYSTEM_NOT_AUTHORIZED.code: "Use a back-office system whose [back-office:...] "
    'section allows it (docs/operations.md, "Back-office systems").',
    errors.UNKNOWN_PERSON.code: "Load the population first (the box does at start; renkei "
    "populate loads more), or check the number.",
    errors.UNKNOWN_STAFF_USER.code: "renkei staff list -i INSTITUTION lists the users.",
    errors.STAFF_USER_EXISTS.code: "Choose another name, or give --if-absent.",
    errors.WEAK_PASSWORD.code: "Give a password of the length the message says.",
    errors.UNKNOWN_ROLE.code: "Give roles of the list the message names.",
    errors.INVALID_STAFF_NAME.code: "Give a name as the message says.",
    errors.UNKNOWN_FAULT.code: "renkei faults list shows the faults in force.",
    errors.BAD_REQUEST.code: "Give a value as the message says (the command's --help lists "
    "what it takes).",
    errors.CONTROL_UNAUTHORIZED.code: "The token is not the running box's: give -c the "
    "configuration the box runs with.",
    errors.CERTIFICATE_NOT_AUTHORIZED.code: "The PKI is not the running box's: give -c the "
    "configuration the box runs with.",
}
DEFAULT_REMEDY = "docs/protocol.md §12 says what the code means."


class CommandFailed(click.ClickException):
    """An expected failure of a command: its code (None for a command's own sentence), what
    went wrong (English) and what to do; it ends the command with status 1."""

    def __init__(self, code: str | None, message: str, remedy: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.remedy = remedy

    @classmethod
    def of(cls, kind: ErrorKind, remedy: str | None = None, **params: Any) -> CommandFailed:
        """The failure of a published code, its message filled with ``params``; what to do:
        ``remedy``, else the code's (`REMEDIES`)."""
        return cls.refusal(RenkeiError(kind, **params), remedy)

    @classmethod
    def refusal(cls, refusal: RenkeiError, remedy: str | None = None) -> CommandFailed:
        """A coded refusal (raised here, or answered by a node, the hub or the control API)."""
        return cls(refusal.code, refusal.message_en, _remedy(refusal.code, remedy))

    @classmethod
    def answered(cls, error: dict[str, Any], remedy: str | None = None) -> CommandFailed:
        """A coded refusal in the JSON a node or the control API answers (``{code,
        message_en, message_ja}``)."""
        code = str(error.get("code"))
        return cls(code, str(error.get("message_en", "")), _remedy(code, remedy))

    def line(self) -> str:
        """The one line shown: ``error: CODE: message — what to do``."""
        text = f"{self.code}: {self.message}" if self.code else self.message
        if self.remedy:
            text += f" — {self.remedy}"
        return "error: " + " ".join(text.split())

    def show(self, file: Any = None) -> None:
        click.echo(self.line(), file=file, err=file is None)


class UsageFailed(CommandFailed):
    """A command line that is not valid: status 2, as click ends it."""

    exit_code = 2


def _remedy(code: str, remedy: str | None) -> str:
    return remedy if remedy is not None else REMEDIES.get(code, DEFAULT_REMEDY)


def _unreachable() -> tuple[type[BaseException], ...]:
    """What a peer that does not answer raises (a refused, reset or dropped connection)."""
    from twisted.internet.error import ConnectError, ConnectionClosed
    from twisted.web.client import ResponseFailed, ResponseNeverReceived

    return (ConnectError, ConnectionClosed, ResponseNeverReceived, ResponseFailed, ConnectionError)


def expected(failure: BaseException) -> CommandFailed | None:
    """The one-line failure ``failure`` is, or None when it is not an expected one (a bug:
    its traceback is shown)."""
    from twisted.internet.defer import FirstError

    from simulators.back_office import BackOfficeError

    if isinstance(failure, FirstError):  # work done in parallel fails with its first failure
        failure = failure.subFailure.value
    if isinstance(failure, CommandFailed):
        return failure
    if isinstance(failure, click.UsageError):
        where = failure.ctx.command_path if failure.ctx is not None else "renkei"
        usage = RenkeiError(errors.USAGE_INVALID, detail=failure.format_message())
        return UsageFailed(usage.code, usage.message_en, f"See {where} --help.")
    if isinstance(failure, click.ClickException):  # a command's own sentence
        return CommandFailed(None, failure.format_message())
    if isinstance(failure, UnknownMember):
        known = ", ".join(failure.known) or "there is none"
        return CommandFailed.of(
            errors.UNKNOWN_INSTITUTION,
            f"Name one of {failure.among}: {known}.",
            code=failure.name,
        )
    if isinstance(failure, ConfigError):
        return CommandFailed.of(errors.CONFIGURATION_INVALID, detail=str(failure))
    if isinstance(failure, RenkeiError):
        return CommandFailed.refusal(failure)
    if isinstance(failure, BackOfficeError):
        return CommandFailed.answered(failure.error)
    if isinstance(failure, _unreachable()):
        detail = f"the network in a box did not answer ({_sentence(failure)})"
        return CommandFailed.of(errors.NETWORK_UNAVAILABLE, detail=detail)
    if isinstance(failure, TimeoutError):
        return CommandFailed.of(errors.WAIT_TIMED_OUT, detail=_sentence(failure))
    if isinstance(failure, OSError) and failure.filename is not None:
        return CommandFailed.of(
            errors.FILE_UNUSABLE, path=failure.filename, detail=failure.strerror or str(failure)
        )
    return None


def _sentence(failure: BaseException) -> str:
    return " ".join((str(failure) or type(failure).__name__).split()).rstrip(".")


class CommandGroup(click.Group):
    """A click group whose commands (and their groups) end an expected failure in one line
    (`expected`), and let any other exception show its traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            returned = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as shown:  # a group without its command
            shown.show()
            sys.exit(shown.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as failure:
            refusal = expected(failure)
            if refusal is None:
                raise
            refusal.show()
            sys.exit(refusal.exit_code)
        sys.exit(returned if isinstance(returned, int) else 0)


def usage_line(program: str, failure: Exception) -> str:
    """The one line of an option of ``program`` (``twistd renkei``) that is not valid."""
    refusal = expected(failure)
    if refusal is None or refusal.code is None:
        usage = RenkeiError(errors.USAGE_INVALID, detail=str(failure))
        refusal = CommandFailed(usage.code, usage.message_en)
    if refusal.code == errors.USAGE_INVALID.code:
        refusal.remedy = f"See {program} --help."
    return f"{program}: {refusal.line()}"
