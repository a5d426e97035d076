"""Identity, TLS, both halves of authentication, the trust store and pinned hosts."""
