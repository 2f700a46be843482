"""The ``interlock`` command and its entry points: the top layer, above ``web``, ``actors`` and ``models``.

``command`` parses the arguments and reads the settings once; one module per subcommand runs it
(``api``, ``worker``, ``scheduler``, ``dev``, ``migrate``, ``config``, ``keys``, ``tenants``, and
``remote`` for the commands that call the HTTP API through ``client``). Only this package may
import every layer; nothing imports it but the console script and ``python -m interlock.cli``.
"""

from .command import main

__all__ = ["main"]
