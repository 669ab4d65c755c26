"""Suite files shipped with snnarena (``snnarena run quick``)."""
