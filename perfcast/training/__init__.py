"""training stage of perfcast (see DESIGN.md)."""
