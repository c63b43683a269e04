"""queryd: the gRPC MarketDataService over QuestDB (book at any instant, deltas, trades,
candles, reference data, live/replay streams)."""
