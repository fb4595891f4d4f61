"""Evaluation on the test split: metrics, output parsing, protocol, baselines, report, figures."""
