//! GStreamer plugin wilddog.
