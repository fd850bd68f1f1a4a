"""Built-in plugins. They install as the package `assistant_plugins` and register through the
`assistant` entry-point group, exactly as a third-party plugin would."""
