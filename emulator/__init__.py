"""The SMS Provider emulator: a stand-in for ConfigMgr reached through WinRM (`python -m emulator`).

* listener/: HTTP(S) as HTTP.sys and a WinRM listener serve it: framing, TLS, Basic and NTLM,
  message encryption, the per-user quota, the request handler.
* wsman/: the WS-Management layer: parsing requests, reply envelopes, SOAP faults and their codes.
* sms/: the SMS Provider's semantics: packages, refreshes, DistMgr, WQL, RBAC, its error replies.
* server: the `Emulator`, the one place that joins listener, wsman and sms.
* fault_injection: seeded decisions about injected latency and faults (HTTP 503, resets, SOAP faults).
* admin: the JSON control API under `/admin/`.
* stats: server counters and CPU per operation; concurrency: the in-flight high-water mark.
* settings: the frozen settings; cli, flag_types, __main__: `python -m emulator`.
"""
