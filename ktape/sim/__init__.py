"""ktape sim: a Kalshi-compatible exchange simulator (WebSocket v2 + REST subset).

It is written from ../shared/kalshi/PROTOCOL.md independently of ingestd (they share no
protocol code), so a misreading of the protocol fails a test instead of being baked into
both. Modules: `fixed` (wire number formats), `model` (seeded market model), `journal`
(ground truth and the true book at any instant), `server` (WS + REST + faults), `cli`.
"""
