"""eval stage of perfcast (see ARCHITECTURE.md)."""
