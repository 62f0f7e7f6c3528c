"""SMS package instances as the WMI plugin renders them inside a Get reply or an enumeration page.

The envelope around them is the WS-Man layer's (emulator.wsman.soap); what goes in it (which
properties, their types, CIM datetimes) is the SMS Provider's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from emulator.sms.packages import PROPERTY_NAMES, format_datetime
from emulator.sms.wql import Value
from emulator.wsman import NS, escape

__all__ = ["render_instance"]


def _property_xml(name: str, value: Value) -> str:
    if value is None:
        return f'<p:{name} xsi:nil="true"/>'
    if isinstance(value, datetime):
        return f"<p:{name}><cim:Datetime>{format_datetime(value)}</cim:Datetime></p:{name}>"
    if isinstance(value, bool):
        return f"<p:{name}>{'true' if value else 'false'}</p:{name}>"
    if isinstance(value, int):
        return f"<p:{name}>{value}</p:{name}>"
    return f"<p:{name}>{escape(value)}</p:{name}>"


def render_instance(
    class_name: str,
    class_uri: str,
    properties: Mapping[str, Value],
    selected: Iterable[str] | None = None,
    *,
    all_names: Iterable[str] = PROPERTY_NAMES,
) -> str:
    """One WMI instance as the WMI plugin renders it (xsi:type, xsi:nil for null, cim:Datetime).

    `selected` names the properties a query asked for; None means all the class's (`all_names`).
    """
    names = all_names if selected is None else selected
    children = "".join(_property_xml(name, properties.get(name)) for name in names)
    return (
        f'<p:{class_name} xmlns:p="{escape(class_uri)}" xmlns:cim="{NS.cim}" xmlns:xsi="{NS.xsi}" '
        f'xsi:type="p:{class_name}_Type">{children}</p:{class_name}>'
    )
