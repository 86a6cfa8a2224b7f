"""Insights: where the local learner needs improvement, and what to do about it.

- :mod:`.embeddings` — offline all-MiniLM-L6-v2 embeddings, cached per text on disk;
- :mod:`.topics` — prompts clustered into topics; per topic volume, ratings per model,
  evaluation scores and the learner's gap to the best model, sorted by impact;
- :mod:`.routing` — per-topic ratings for the ``best_rated`` router (``routing.topic_aware``);
- :mod:`.active` — the active-learning queue (uncertain, disagreeing, low-rated) and its actions;
- :mod:`.explain` — per-token confidence of local answers, nearest training examples of a version;

Nothing here imports streamlit; pages/insights.py only draws what these functions return.
"""
