"""The learning logs: append-only JSONL records by month (interactions, feedback,
evaluations), their parsing, Arrow snapshots and maintenance (doctor, import, export, and the
line edits delete-user uses)."""
