"""target-pgcopy: load one day's streams into warehouse snapshots with COPY, in one transaction."""
