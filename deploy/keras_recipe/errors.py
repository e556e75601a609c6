class UserError(Exception):
    """Bad input (a file, folder or value the user gave): one line, no traceback."""
