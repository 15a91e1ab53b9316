"""The local exchange behind local_exchange.py: Binance's USDⓈ-M protocol served over the
simulator — REST gateway (signatures, weights, faults), the clock, WebSocket streams, the REST
and WebSocket APIs, and the encoders of Binance's JSON."""
