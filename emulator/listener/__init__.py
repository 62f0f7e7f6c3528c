"""The HTTP(S) listener: what HTTP.sys and a WinRM listener do before a SOAP envelope is read.

It knows neither WS-Man nor the SMS Provider: emulator.server hands it the provider and the one
WS-Man reading it needs (the request's OperationTimeout).

* handler: the request handler: `/wsman` like a WinRM listener, `/admin/` for control.
* http_framing: HTTP/1.1 as HTTP.sys frames it (bodies, error pages, idle keep-alive closes).
* connection_auth: who is calling, one decision per request (Basic, or Negotiate per connection).
* auth: the mechanisms: the Basic check, the NTLM acceptor (pyspnego) and its user file.
* kerberos: the Kerberos acceptor from a keytab (python-gssapi, imported when a listener accepts Kerberos).
* encryption: [MS-WSMV] message encryption framing, NTLM's and Kerberos' (pure functions).
* tls: a throwaway CA and server certificate, the SSLContext, the channel binding.
* quota: WinRM's per-user operation quota, and a gate tests hold operations at.
* operation_plan: what to do with one operation: wait, then an injected failure or the answer.
"""

from emulator.listener.auth import NTLM_USERS, quiet_handshake_logging
from emulator.listener.handler import WSMAN_PATH, Listener, ListenerServer
from emulator.listener.http_framing import SERVER_HEADER
from emulator.listener.quota import OperationGate, OperationQuota
from emulator.listener.tls import TlsFiles, channel_binding_hash, generate_self_signed, server_context

__all__ = [
    "NTLM_USERS",
    "SERVER_HEADER",
    "WSMAN_PATH",
    "Listener",
    "ListenerServer",
    "OperationGate",
    "OperationQuota",
    "TlsFiles",
    "channel_binding_hash",
    "generate_self_signed",
    "quiet_handshake_logging",
    "server_context",
]
