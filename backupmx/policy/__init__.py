"""Policy delegation: the protocol client and server, and built-in greylisting."""
