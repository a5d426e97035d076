"""The pool's host: the coordinator, its servers and sessions, access, and the task service."""
