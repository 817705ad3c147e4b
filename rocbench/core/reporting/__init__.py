"""Reporting: what a run's rows look like to a person (terminal table, report.md, plots, JUnit) and how two runs
compare. It reads results; it runs nothing."""
