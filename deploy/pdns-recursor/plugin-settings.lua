-- /etc/cordon/plugin-settings.lua — settings of the Cordon Lua plugins (docs/plugins.md).
return {
  -- The index file `resolver sync` writes next to state.bin (sync.state_dir in resolver.toml).
  index = "/var/lib/cordon-sync/index.bin",
  -- The stop page's addresses: A and AAAA answers for listed names (none: NODATA).
  ipv4 = { "192.0.2.80" },
  ipv6 = { "2001:db8::80" },
  ttl = 60,
  ede_text = "Blocked by order of the Example Authority; see http://stop.isp.example/",
  reload_interval = 0.5,
  -- Run (in the background) when a new list is taken: wipe the caches so names cached before
  -- they were listed are not served again. Leave it out if you set packetcache-ttl instead.
  after_change = { "rec_control", "wipe-cache", ".$" },
}
