"""Screens of the Malti TUI, one module each."""
