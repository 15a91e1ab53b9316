"""The live side: the launcher, the daemon and its reconciliation, the order in which
stream messages are acted on, the offline demo and the pre-flight check.  It talks to Binance
through binance_library and never imports the simulator or the local exchange."""
