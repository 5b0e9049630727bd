"""models stage of perfcast (see DESIGN.md)."""
