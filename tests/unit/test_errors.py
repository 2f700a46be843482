"""Every error Interlock raises on purpose derives from one base class, ``interlock.errors.InterlockError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import actors.errors
import interlock.errors
from interlock.errors import InterlockError, SettingsError

PACKAGES = ("interlock", "actors", "web", "models")


def own_exception_classes() -> dict[str, type[BaseException]]:
    """Public exception classes defined in Interlock's packages (private control-flow ones aside)."""
    found: dict[str, type[BaseException]] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                    and not name.startswith("_")
                ):
                    found[f"{module.__name__}.{name}"] = value
    return found


def test_one_exception_tree() -> None:
    classes = own_exception_classes()
    assert "web.signatures.InvalidSignature" in classes
    assert "interlock.client.errors.ApiError" in classes
    assert "interlock.client.errors.ResultTimeout" in classes
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, InterlockError))
    assert outside == []


def test_the_root_is_the_one_actors_use_and_settings_errors_stay_value_errors() -> None:
    assert actors.errors.InterlockError is interlock.errors.InterlockError
    assert issubclass(SettingsError, ValueError)
