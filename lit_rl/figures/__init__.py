"""Figures and reports drawn from finished runs: the cross-run report and each scenario's figures."""
