"""features stage of perfcast (see DESIGN.md)."""
