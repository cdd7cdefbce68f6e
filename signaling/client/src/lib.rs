//! Async WebSocket client of the Wilddog signaling protocol.
