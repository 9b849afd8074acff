"""Transports: the socket side that pumps bytes into the protocol layer."""
