-- /etc/cordon/plugin-settings.lua — settings of the Cordon Lua plugins (docs/plugins.md).
return {
  index = "/var/lib/cordon-sync/index.bin",
  ipv4 = { "192.0.2.80" },
  ipv6 = { "2001:db8::80" },
  ttl = 60,
  ede_text = "Blocked by order of the Example Authority; see http://stop.isp.example/",
  reload_interval = 0.5,
}
