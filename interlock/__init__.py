"""Interlock: settings, logging and the command line shared by the API, the workers and the scheduler."""

__version__ = "0.1.0"
