"""Privacy requests: deleting one user's data from everywhere under the data directory.

- :mod:`.deletion` — ``delete-user``: every place that holds their text, resumable after a crash;
- :mod:`.footprint` — their ids and texts, and how to recognise them in derived files;
- :mod:`.journal` — the ids and finished phases of a deletion in progress (no text).
"""
