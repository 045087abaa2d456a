"""Errors in what the user gave, not in the code: params.yaml, a data source, a busy workspace. `python -m tasks`
prints their message as one line and exits 2 (`--debug` shows the traceback), so the message must say what is wrong
and where, and how to fix it when that is not obvious."""


class UserError(Exception):
    pass
