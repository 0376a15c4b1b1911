"""The recovered model: its spec, the code written from it, and the module built from that code."""
