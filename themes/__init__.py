"""batchtui's built-in Textual themes, as data files.

Each ``*.toml`` file in this package is one theme (the format is the
``ThemeFile`` model in ``batchtui.tui.themes``, which also loads them).
Users add or override themes with files of the same format under
``$XDG_CONFIG_HOME/batchtui/themes``. This package holds data only: importing
it imports nothing else (in particular not textual).
"""
