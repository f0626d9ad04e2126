"""The backend process: an HTTP API on loopback, and the client the viewer uses to reach it."""
