"""The local exchange behind local_exchange.py: Binance's USDⓈ-M protocol served over the
simulator, as composed parts — REST gateway (signatures, weights, faults), the clock, the
funding ledger, WebSocket streams, the REST and WebSocket APIs, the loopback admin API — built
from one `ExchangeSettings`, and the encoders of Binance's JSON."""
