"""eval stage of perfcast (see DESIGN.md)."""
