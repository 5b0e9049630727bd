"""perf_probe stage of perfcast (see DESIGN.md)."""
