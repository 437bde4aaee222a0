"""Widgets of the batchtui TUI, one per module."""
