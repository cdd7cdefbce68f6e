//! The Wilddog signaling server.
