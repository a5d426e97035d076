"""A client of a pool: the CLI's and the window's links, task conversations and task files."""
