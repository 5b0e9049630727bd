"""training stage of perfcast (see ARCHITECTURE.md)."""
