"""Widgets of the Malti TUI, one module per area of the screen."""
