"""Experiments: benchmark presets, baselines, suites, the accuracy report and its command line; uses training and eval, used by nothing below."""
