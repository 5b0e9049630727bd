"""Experiments: benchmark presets, baselines, suites and the evaluation report; uses training and eval, used by
nothing below.

- :mod:`~perfcast.experiments.presets`: a protocol's settings from its ``configs/*.toml`` (``[benchmark]``),
  fitted through :mod:`perfcast.training.train`'s fit functions;
- :mod:`~perfcast.experiments.results`: a row (:class:`~perfcast.experiments.results.Result`), the run's choices,
  the shared workspace; :mod:`~perfcast.experiments.scoring` and :mod:`~perfcast.experiments.baselines`;
- one module per suite: :mod:`~perfcast.experiments.gpperf`, :mod:`~perfcast.experiments.neusight`,
  :mod:`~perfcast.experiments.aiconfigurator`, :mod:`~perfcast.experiments.cpu` (SPEC, NCPP),
  :mod:`~perfcast.experiments.power_bench`, :mod:`~perfcast.experiments.adapt_bench`;
- :mod:`~perfcast.experiments.registry`: protocol name -> runner (what ``benchmarks/accuracy.py`` offers);
- :mod:`~perfcast.experiments.report` / :mod:`~perfcast.experiments.saved`: judging one model on a protocol.
"""
