"""Sans-I/O STOMP protocol: frames in, presence events out (``events``), bodies checked (``payloads``)."""
