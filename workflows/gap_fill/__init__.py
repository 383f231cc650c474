"""gap_fill: repair jobs for the gaps in a story bible (`bible.db`)."""
