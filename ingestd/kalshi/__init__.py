"""Kalshi-specific parts of ingestd (wire formats, auth, REST, WebSocket)."""
