"""Public datasets: one importer per source (:mod:`perfcast.datasets.importers`) into the record store, and the
spec-sheet builder."""
