"""The officers' web console, served by `blocklist serve` under /console/ (docs/console.md)."""
