"""Dramatiq middleware: one hook class per concern of a task's life in a worker."""
