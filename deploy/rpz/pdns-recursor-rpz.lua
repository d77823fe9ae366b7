-- PowerDNS Recursor 4.8: the Cordon RPZ feed (include from recursor.conf: lua-config-file=).
-- See docs/rpz.md "PowerDNS Recursor". tests/test_rpz_pdns_knot.py runs this call.
-- 192.0.2.10: the host running `resolver rpz serve`. Keep this file root:pdns 0640 (TSIG secret).
rpzPrimary("192.0.2.10:53", "rpz.cordon.example.", {
    tsigname = "cordon-rpz.",
    tsigalgo = "hmac-sha256",
    tsigsecret = "<contents of /etc/cordon/rpz-tsig.key>",
    refresh = 10,
    seedFile = "/var/lib/pdns-recursor/rpz.cordon.example.zone",
    dumpFile = "/var/lib/pdns-recursor/rpz.cordon.example.zone",
    policyName = "cordon",
})
