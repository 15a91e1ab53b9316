"""The simulator: one account (wallet, positions, liquidation, funding), its order book and
algo orders, the fill model, and the candle replay the backtest and the local exchange share."""
