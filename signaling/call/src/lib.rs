//! The Wilddog conversation state machine, sans I/O.
