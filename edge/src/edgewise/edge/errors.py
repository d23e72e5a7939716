"""Exceptions shared by every layer: one readable line for the user, a code for machines."""

from __future__ import annotations


class EdgewiseError(Exception):
    """An error the user can act on; the command line prints it as one line."""

    def cli_message(self) -> str:
        """The message as the command line shows it (options spelled as flags)."""
        return str(self)


def flag(option: str) -> str:
    """A library parameter as its command-line flag: max_accuracy_drop -> --max-accuracy-drop."""
    return f"--{option.replace('_', '-')}"


class BundleError(EdgewiseError):
    """A bundle directory that is missing, malformed, or does not match its hashes."""


class BackendUnavailableError(EdgewiseError):
    """No installed runtime can run the bundle's model file."""


class RequestError(EdgewiseError):
    """A request the agent cannot serve; answered on the error topic, never fatal.

    ``code`` is machine-readable (see docs/mqtt.md), the message is for people.
    """

    def __init__(self, code: str, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class OptionError(EdgewiseError):
    """A library option with a bad value; ``option`` is its parameter name.

    The command line shows it as the matching flag (``max_accuracy_drop`` ->
    ``--max-accuracy-drop``); library callers see the parameter name.
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option} {problem}")
        self.option = option
        self.problem = problem

    def cli_message(self) -> str:
        return f"{flag(self.option)} {self.problem}"
