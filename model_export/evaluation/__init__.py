"""Evaluation: metrics, scoring runs and served model directories, the reports and plots."""
