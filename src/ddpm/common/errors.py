"""Errors meant for the user: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (a flag, a file, a prompt): the message says what was wrong and what to do."""
