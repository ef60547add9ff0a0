"""subnas' built-in plugins (installed as ``subnas_plugins``): ordinary plugins, one module each,
registered through the same hooks as third-party packages (see `subnas.plugins`)."""
