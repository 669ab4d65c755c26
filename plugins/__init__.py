"""Built-in snnarena plugins, each registered through the ``snnarena`` entry-point group."""
