"""Evaluating models: the evaluator (suites, batched local answers), metrics
(ROUGE, BLEU, accuracy, paired bootstrap) and held-out splits."""
