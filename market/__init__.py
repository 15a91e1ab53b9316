"""What the market is made of, for every side: kline files (read, checked, written),
funding-rate series, and the leverage brackets (maintenance margin and liquidation)."""
