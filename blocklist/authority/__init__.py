"""The authority: entry store, four-eyes lifecycle, publication, HTTP API. Server side only."""
