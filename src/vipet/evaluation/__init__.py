"""Evaluation: NLG metrics, clinical F1, VQA scoring, runners and plots."""
