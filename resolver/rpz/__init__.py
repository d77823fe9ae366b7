"""The list as a Response Policy Zone: an authoritative primary for BIND/Unbound/PowerDNS fleets.

`zone` turns a verified plain-edition list into RPZ records and keeps the IXFR history (plain
functions, no I/O); `wire` renders transfer messages and TSIG; `server` is the thin asyncio
UDP/TCP layer; `notify` tells secondaries about a new serial; `service` ties them to the list
that `resolver sync` keeps on disk; `cli` holds `resolver rpz serve|export|keygen`.
"""
