"""Package discovery for snnarena's layout, where folders and import names differ.

=============  =====================  ==========================================
folder         import name            what it holds
=============  =====================  ==========================================
``snnarena/``  ``snnarena``           the host
``plugins/``   ``snnarena_plugins``   the built-in plugins (entry points)
``suites/``    ``snnarena_suites``    the shipped suite files (package data)
=============  =====================  ==========================================

Every package below those folders is found by ``find_packages`` and shipped under its mapped
name, so a new sub-package is never left out of a non-editable install. Everything else is in
``pyproject.toml``.
"""

from setuptools import find_packages, setup

#: Import name of each top-level package → the folder that holds it.
LAYOUT: dict[str, str] = {"snnarena": "snnarena", "snnarena_plugins": "plugins", "snnarena_suites": "suites"}


def discover(layout: dict[str, str]) -> list[str]:
    """Every package under each folder, named with its folder's import name as prefix."""
    packages: list[str] = []
    for name, folder in layout.items():
        packages.append(name)
        packages.extend(f"{name}.{sub}" for sub in find_packages(where=folder))
    return packages


setup(package_dir=LAYOUT, packages=discover(LAYOUT))
