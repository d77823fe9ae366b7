"""Where a feed's content comes from, one module per source type, each doing its own checks:
`cordon` (a partner authority's signed artefacts, verified by the sync engine against its
pinned root), `https` (a file over HTTPS with a pinned certificate and/or a detached minisign
signature), and out-of-band files imported with their checksum. `formats` parses what they
deliver; `refresh` runs one refresh of one feed; `poller` runs them on schedule."""
