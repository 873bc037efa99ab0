"""Prefect tasks of the evaluation stages: targets, prompting baselines, the judge, the report."""
