"""The SMS Provider's semantics: what ConfigMgr answers, given a parsed WS-Man request.

No sockets and no HTTP (emulator.listener carries the requests); replies are built with
emulator.wsman.

* provider: the SMS Provider: one SOAP request in, one reply out (dispatch, Get, Invoke, Put).
* enumerations: Enumerate / Pull / Release over WQL, and the open contexts between them.
* catalogue: the site's packages and what ConfigMgr does with a refresh.
* distmgr: Distribution Manager's package queue (pure, injected clock).
* pkgxfer: Package Transfer Manager: DP rows and copy jobs after DistMgr (pure, injected clock).
* content_status: the site's DPs and the distribution status classes rendered from pkgxfer's rows.
* generation: the seeded catalogue (same settings, same packages).
* packages: what a package is: the properties served, their codes and types.
* instance_xml: one package instance as the WMI plugin renders it in a reply.
* access: who may use the site's namespace, and the packages RBAC hides.
* calllog: the provider's call log (Gets, Invokes, refreshes per package, totals).
* wql: the WQL parser and query tree; wql_eval: evaluating it against one instance.
* error_replies: the SMS Provider's own error replies and their `SMS_ExtendedStatus`.
"""

from emulator.sms.catalogue import Catalogue
from emulator.sms.instance_xml import render_instance
from emulator.sms.packages import PROPERTY_NAMES
from emulator.sms.provider import Provider

__all__ = ["PROPERTY_NAMES", "Catalogue", "Provider", "render_instance"]
