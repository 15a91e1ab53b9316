"""Research around backtest.py and optimize.py: the search space, the scores and the
study runner."""
