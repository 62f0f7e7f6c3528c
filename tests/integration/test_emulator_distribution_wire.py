"""Distribution to every DP through pywinrm (Invoke, WQL Enumerate/Pull, Get, Put) and the admin API."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from winrm.exceptions import WinRMError
from winrm.protocol import Protocol

from emulator.server import Emulator
from testing.fixtures_emulator import EmulatorFactory, winrm_protocol
from testing.waiting import wait_until
from testing.wsman_requests import (
    ACTION_PUT,
    enumerate_envelope,
    enumeration_page,
    instance_envelope,
    invoke_envelope,
    pull_envelope,
    return_value,
)
from worker.domain.distribution import unsettled_dp_status_query

pytestmark = pytest.mark.integration

_BASIC_HTTP: dict[str, Any] = {"auth_modes": ("basic",), "allow_unencrypted": True, "package_count": 40}
_FAST_COPIES: dict[str, Any] = {"dp_copy_time_s": 0.05, "dp_retry_delay_s": 0.05, "dp_retry_count": 2}
_SETTLED_WITHIN_S = 10.0
_SUMMARIZER = "SMS_PackageStatusDistPointsSummarizer"


def _admin(session: requests.Session, emulator: Emulator, method: str, route: str, body: Any = None) -> Any:
    response = session.request(method, emulator.admin_url + route, json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _wql(columns: str, class_name: str, where: str) -> str:
    return f"SELECT {columns} FROM {class_name} WHERE {where}"  # noqa: S608 - WQL for the emulator, not SQL


def _query(protocol: Protocol, emulator: Emulator, wql: str, *, page: int = 50) -> list[dict[str, str | None]]:
    """Every instance a WQL query selects: Enumerate, then Pull until EndOfSequence."""
    site = emulator.settings.site_code
    items, context = enumeration_page(
        protocol.send_message(enumerate_envelope(emulator.url, site, wql, max_elements=page))
    )
    while context is not None:
        more, context = enumeration_page(
            protocol.send_message(pull_envelope(emulator.url, site, context, max_elements=page))
        )
        items.extend(more)
    return items


def _direct_package(emulator: Emulator, index: int = 0) -> dict[str, Any]:
    packages = [
        p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2 and p["class"] != "SMS_TaskSequencePackage"
    ]
    return packages[index]


def _refresh(protocol: Protocol, emulator: Emulator, package: dict[str, Any]) -> None:
    site = emulator.settings.site_code
    envelope = invoke_envelope(emulator.url, site, package["PackageID"], class_name=package["class"])
    assert return_value(protocol.send_message(envelope)) == 0


def _rows(protocol: Protocol, emulator: Emulator, package_id: str) -> dict[str, tuple[int, int]]:
    """DP short name -> (State, SourceVersion) from SMS_PackageStatusDistPointsSummarizer."""
    wql = _wql("ServerNALPath, State, SourceVersion", _SUMMARIZER, f"PackageID = '{package_id}'")
    rows = {}
    for item in _query(protocol, emulator, wql):
        nal = item["ServerNALPath"] or ""
        server = nal.rstrip("\\").rsplit("\\", 1)[-1]
        rows[server.split(".", 1)[0]] = (int(item["State"] or -1), int(item["SourceVersion"] or -1))
    return rows


def _nal(emulator: Emulator, short_name: str) -> str:
    for dp in emulator.provider.distribution()["distribution_points"]:
        if dp["name"].startswith(short_name + "."):
            return str(dp["nal_path"])
    raise AssertionError(f"no DP {short_name}")


def test_rows_read_the_old_version_in_state_0_until_distmgr_processed_then_update_to_the_new(
    emulator_factory: EmulatorFactory, emulator_admin_session: requests.Session
) -> None:
    """The V0/V1 trap over the wire: DistMgr held -> every row State 0 at V0 (not done); PkgXferMgr
    held -> State 7 at V0; released -> State 0 at V1 on every DP."""
    emulator = emulator_factory(**_BASIC_HTTP, **_FAST_COPIES)
    protocol = winrm_protocol(emulator)
    admin = emulator_admin_session
    package = _direct_package(emulator)
    v0 = package["SourceVersion"]
    _admin(admin, emulator, "POST", "distmgr", {"hold": True})
    _admin(admin, emulator, "POST", "distribution", {"hold": True})
    _refresh(protocol, emulator, package)
    rows = _rows(protocol, emulator, package["PackageID"])
    assert len(rows) == 5 and set(rows.values()) == {(0, v0)}
    _admin(admin, emulator, "POST", "distmgr", {"hold": False})
    assert set(_rows(protocol, emulator, package["PackageID"]).values()) == {(7, v0)}
    _admin(admin, emulator, "POST", "distribution", {"hold": False})
    assert wait_until(
        lambda: set(_rows(protocol, emulator, package["PackageID"]).values()) == {(0, v0 + 1)},
        timeout_s=_SETTLED_WITHIN_S,
    )


def test_an_offline_dp_retries_then_fails_with_an_error_message_and_a_failed_job(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory(**_BASIC_HTTP, **_FAST_COPIES, dp_offline=("DP02",))
    protocol = winrm_protocol(emulator)
    package = _direct_package(emulator)
    package_id, v0 = package["PackageID"], package["SourceVersion"]
    _refresh(protocol, emulator, package)
    assert wait_until(lambda: _rows(protocol, emulator, package_id)["DP02"] == (3, v0), timeout_s=_SETTLED_WITHIN_S)
    rows = _rows(protocol, emulator, package_id)
    assert {name: row for name, row in rows.items() if name != "DP02"} == {
        name: (0, v0 + 1) for name in ("DP01", "DP03", "DP04", "DP05")
    }
    statuses = _query(
        protocol,
        emulator,
        _wql("*", "SMS_DistributionDPStatus", f"PackageID = '{package_id}' AND MessageState >= 3"),
    )
    assert [(s["Name"] or "").split(".")[0] for s in statuses] == ["DP02"]
    assert statuses[0]["LastUpdateDate"] and statuses[0]["MessageID"] == "2329"
    (job,) = _query(protocol, emulator, _wql("*", "SMS_DistributionJob", f"PkgID = '{package_id}'"))
    assert (job["State"], job["RetryCount"], job["RemainingSize"]) == ("6", "3", job["TotalSize"])
    (extra,) = _query(protocol, emulator, _wql("*", "SMS_ObjectContentExtraInfo", f"PackageID = '{package_id}'"))
    assert (extra["Targeted"], extra["NumberSuccess"], extra["NumberErrors"], extra["NumberInProgress"]) == (
        "5",
        "4",
        "1",
        "0",
    )


def test_a_dp_failing_every_transfer_reaches_state_3_and_refreshnow_re_sends_it_once_healed(
    emulator_factory: EmulatorFactory, emulator_admin_session: requests.Session
) -> None:
    """Failure share injected at run time (1.0), the DP fails; healed, a Put of RefreshNow = true on
    its SMS_DistributionPoint (NAL path selector with quotes, brackets, backslashes) re-sends it."""
    emulator = emulator_factory(**_BASIC_HTTP, **_FAST_COPIES)
    protocol = winrm_protocol(emulator)
    admin = emulator_admin_session
    package = _direct_package(emulator)
    package_id, v0 = package["PackageID"], package["SourceVersion"]
    _admin(admin, emulator, "POST", "distribution", {"dp": "DP03", "failure_share": 1.0})
    _refresh(protocol, emulator, package)
    assert wait_until(lambda: _rows(protocol, emulator, package_id)["DP03"] == (3, v0), timeout_s=_SETTLED_WITHIN_S)
    _admin(admin, emulator, "POST", "distribution", {"dp": "DP03", "failure_share": 0.0})
    selectors = {"PackageID": package_id, "ServerNALPath": _nal(emulator, "DP03"), "SiteCode": "PS1"}
    site = emulator.settings.site_code
    put = instance_envelope(
        emulator.url, site, "SMS_DistributionPoint", selectors, action=ACTION_PUT, properties={"RefreshNow": "true"}
    )
    reply = protocol.send_message(put)
    assert b"PutResponse" in reply and b"SMS_DistributionPoint" in reply
    assert wait_until(lambda: _rows(protocol, emulator, package_id)["DP03"] == (0, v0 + 1), timeout_s=_SETTLED_WITHIN_S)
    assert emulator.provider.call_log()["packages"][package_id]["events"][-1]["result"] == "refresh_now"


def test_a_pull_dp_is_still_downloading_after_the_push_dps_are_done(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(**_BASIC_HTTP, dp_copy_time_s=0.3, pull_dp_copy_factor=20.0)
    protocol = winrm_protocol(emulator)
    package = _direct_package(emulator)
    package_id, v0 = package["PackageID"], package["SourceVersion"]
    _refresh(protocol, emulator, package)
    assert wait_until(lambda: _rows(protocol, emulator, package_id)["DP04"] == (0, v0 + 1), timeout_s=_SETTLED_WITHIN_S)
    assert _rows(protocol, emulator, package_id)["DP05"] == (7, v0)
    (status,) = _query(
        protocol,
        emulator,
        _wql(
            "MessageID, MessageState", "SMS_DistributionDPStatus", f"PackageID = '{package_id}' AND Name LIKE 'DP05.%'"
        ),
    )
    assert (status["MessageID"], status["MessageState"]) == ("2391", "2")


def test_a_dp_with_a_closed_schedule_holds_its_copy_until_the_schedule_is_cleared(
    emulator_factory: EmulatorFactory, emulator_admin_session: requests.Session
) -> None:
    emulator = emulator_factory(**_BASIC_HTTP, **_FAST_COPIES)
    protocol = winrm_protocol(emulator)
    admin = emulator_admin_session
    package = _direct_package(emulator)
    package_id, v0 = package["PackageID"], package["SourceVersion"]
    state = _admin(admin, emulator, "POST", "distribution", {"dp": "DP01", "schedule": {"closed": True}})
    assert state["distribution_points"][0]["schedule"] == {"period_s": None, "open_s": 0.0}
    _refresh(protocol, emulator, package)
    assert wait_until(lambda: _rows(protocol, emulator, package_id)["DP02"] == (0, v0 + 1), timeout_s=_SETTLED_WITHIN_S)
    assert _rows(protocol, emulator, package_id)["DP01"] == (7, v0)
    assert _admin(admin, emulator, "GET", "distribution")["distribution_points"][0]["held_by_schedule"] == 1
    _admin(admin, emulator, "POST", "distribution", {"dp": "DP01", "schedule": None})
    assert wait_until(lambda: _rows(protocol, emulator, package_id)["DP01"] == (0, v0 + 1), timeout_s=_SETTLED_WITHIN_S)


def test_the_unsettled_query_lists_rows_until_every_dp_holds_the_version_asked_for(
    emulator_factory: EmulatorFactory, emulator_admin_session: requests.Session
) -> None:
    """The worker's filtered read over the wire: copies held -> every row of the package listed (not
    installed at V1); copies landed -> none at V1, every one at V1 + 1; another package's rows never."""
    emulator = emulator_factory(**_BASIC_HTTP, **_FAST_COPIES)
    protocol = winrm_protocol(emulator)
    package, other = _direct_package(emulator), _direct_package(emulator, 1)
    pid, v1 = package["PackageID"], package["SourceVersion"] + 1

    def unsettled(version: int) -> list[dict[str, str | None]]:
        return _query(protocol, emulator, unsettled_dp_status_query({pid: version, other["PackageID"]: 1}))

    _admin(emulator_admin_session, emulator, "POST", "distribution", {"hold": True})
    _refresh(protocol, emulator, package)
    assert wait_until(lambda: len(unsettled(v1)) == 5, timeout_s=_SETTLED_WITHIN_S)
    assert {row["PackageID"] for row in unsettled(v1)} == {pid}
    _admin(emulator_admin_session, emulator, "POST", "distribution", {"hold": False})
    assert wait_until(lambda: unsettled(v1) == [], timeout_s=_SETTLED_WITHIN_S)
    assert len(unsettled(v1 + 1)) == 5


def test_a_chunk_of_200_package_ids_in_one_query_returns_every_row_of_exactly_those(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory(**{**_BASIC_HTTP, "package_count": 260}, dp_count=3, pull_dp_count=0)
    protocol = winrm_protocol(emulator)
    ids = [p["PackageID"] for p in emulator.provider.packages()][:200]
    clauses = " OR ".join(f"PackageID = '{package_id}'" for package_id in ids)
    rows = _query(protocol, emulator, _wql("PackageID, State", _SUMMARIZER, clauses), page=250)
    assert len(rows) == 600
    assert {row["PackageID"] for row in rows} == set(ids)


def test_get_of_a_distribution_point_round_trips_its_nal_path(emulator_basic_http: Emulator) -> None:
    emulator = emulator_basic_http
    protocol = winrm_protocol(emulator)
    package_id = emulator.provider.packages()[0]["PackageID"]
    nal = _nal(emulator, "DP02")
    assert '"' in nal and "[" in nal and "\\" in nal
    selectors = {"PackageID": package_id, "ServerNALPath": nal, "SiteCode": "PS1"}
    reply = protocol.send_message(instance_envelope(emulator.url, "PS1", "SMS_DistributionPoint", selectors))
    (item,), _context = enumeration_page(b"<x><w:Items xmlns:w='urn:w'>" + _body(reply) + b"</w:Items></x>")
    assert (item["ServerNALPath"], item["PackageID"], item["RefreshNow"]) == (nal, package_id, "false")


def test_a_child_sites_dp_is_listed_by_the_source_site_with_its_own_site_code(
    emulator_factory: EmulatorFactory,
) -> None:
    """A hierarchy as the source site's provider reports it: DP04 of child site S01 is in the
    summarizer with SiteCode S01 and SMS_SITE=S01 in its NAL path; its SMS_DistributionPoint is
    found with SiteCode S01 and not with the source site's code."""
    emulator = emulator_factory(**_BASIC_HTTP, dp_child_sites=("DP04=S01",))
    protocol = winrm_protocol(emulator)
    package_id = _direct_package(emulator)["PackageID"]
    wql = _wql("ServerNALPath, SiteCode", _SUMMARIZER, f"PackageID = '{package_id}'")
    sites = {
        str(row["ServerNALPath"]).rstrip("\\").rsplit("\\", 1)[-1][:4]: row["SiteCode"]
        for row in _query(protocol, emulator, wql)
    }
    assert sites == {"DP01": "PS1", "DP02": "PS1", "DP03": "PS1", "DP04": "S01", "DP05": "PS1"}
    nal = _nal(emulator, "DP04")
    assert '["SMS_SITE=S01"]' in nal
    for site_code, found in (("S01", True), ("PS1", False)):
        selectors = {"PackageID": package_id, "ServerNALPath": nal, "SiteCode": site_code}
        envelope = instance_envelope(emulator.url, "PS1", "SMS_DistributionPoint", selectors)
        if found:
            assert b"SMS_DistributionPoint" in protocol.send_message(envelope)
        else:
            with pytest.raises(WinRMError):
                protocol.send_message(envelope)
    with pytest.raises(ValueError, match="dp_child_sites"):
        emulator_factory(**_BASIC_HTTP, dp_child_sites=("DP09=S01",))


def _body(reply: bytes) -> bytes:
    start = reply.index(b"<s:Body>") + len(b"<s:Body>")
    return reply[start : reply.index(b"</s:Body>")]


@pytest.mark.parametrize(
    ("selectors", "fault_text"),
    [
        ({"PackageID": "{pkg}", "ServerNALPath": "{nal}"}, "InvalidSelectors"),
        ({"PackageID": "{pkg}", "ServerNALPath": "{nal}", "SiteCode": "PS1", "Extra": "1"}, "InvalidSelectors"),
        ({"PackageID": "{pkg}", "ServerNALPath": "{nal}", "SiteCode": "ZZ9"}, "DestinationUnreachable"),
        ({"PackageID": "{pkg}", "ServerNALPath": '["Display=\\\\DP02"]', "SiteCode": "PS1"}, "DestinationUnreachable"),
        ({"PackageID": "{pkg}", "ServerNALPath": "<&>'\"]]>\\", "SiteCode": "PS1"}, "DestinationUnreachable"),
        ({"PackageID": "PS1FFFFF", "ServerNALPath": "{nal}", "SiteCode": "PS1"}, "DestinationUnreachable"),
    ],
    ids=["missing-site-code", "extra-selector", "other-site", "truncated-nal", "xml-specials", "unknown-package"],
)
def test_a_hostile_or_wrong_selector_set_gets_a_fault_not_a_crash(
    emulator_basic_http: Emulator, selectors: dict[str, str], fault_text: str
) -> None:
    emulator = emulator_basic_http
    protocol = winrm_protocol(emulator)
    values = {"{pkg}": emulator.provider.packages()[0]["PackageID"], "{nal}": _nal(emulator, "DP02")}
    filled = {name: values.get(value, value) for name, value in selectors.items()}
    put = instance_envelope(
        emulator.url, "PS1", "SMS_DistributionPoint", filled, action=ACTION_PUT, properties={"RefreshNow": "true"}
    )
    with pytest.raises(WinRMError) as raised:
        protocol.send_message(put)
    assert fault_text in str(getattr(raised.value, "response", "")) + str(raised.value)
    assert emulator.provider.distribution()["counters"]["jobs"] == 0


def test_put_refuses_a_non_boolean_refreshnow_and_any_class_but_distribution_point(
    emulator_basic_http: Emulator,
) -> None:
    emulator = emulator_basic_http
    protocol = winrm_protocol(emulator)
    package = emulator.provider.packages()[0]
    selectors = {"PackageID": package["PackageID"], "ServerNALPath": _nal(emulator, "DP01"), "SiteCode": "PS1"}
    bad_value = instance_envelope(
        emulator.url, "PS1", "SMS_DistributionPoint", selectors, action=ACTION_PUT, properties={"RefreshNow": "maybe"}
    )
    with pytest.raises(WinRMError, match="SchemaValidationError"):
        protocol.send_message(bad_value)
    on_package = instance_envelope(
        emulator.url,
        "PS1",
        package["class"],
        {"PackageID": package["PackageID"]},
        action=ACTION_PUT,
        properties={"Name": "renamed"},
    )
    with pytest.raises(WinRMError) as raised:
        protocol.send_message(on_package)
    assert "ActionNotSupported" in str(getattr(raised.value, "response", "")) + str(raised.value)
    assert emulator.provider.distribution()["counters"]["jobs"] == 0


def test_the_admin_api_shows_the_model_and_refuses_bad_fault_requests(
    emulator_basic_http: Emulator, emulator_admin_session: requests.Session
) -> None:
    emulator = emulator_basic_http
    admin = emulator_admin_session
    state = _admin(admin, emulator, "GET", "distribution")
    assert [dp["pull"] for dp in state["distribution_points"]] == [False, False, False, False, True]
    package_id = emulator.provider.packages()[0]["PackageID"]
    rows = _admin(admin, emulator, "GET", f"distribution/packages/{package_id.lower()}")["rows"]
    assert [row["state"] for row in rows] == [0] * 5
    for body, status in (
        ({"dp": "DP99", "offline": True}, 404),
        ({"offline": True}, 400),
        ({"dp": "DP01", "failure_share": 1.5}, 400),
        ({"dp": "DP01", "schedule": {"period_s": 0, "open_s": 1}}, 400),
        ({"dp": "DP01", "schedule": "tonight"}, 400),
        ({"dp": "DP01", "surprise": 1}, 400),
        ([1, 2], 400),
    ):
        response = admin.post(emulator.admin_url + "distribution", json=body, timeout=5)
        assert response.status_code == status, (body, response.text)
        assert "error" in response.json()
    assert admin.get(emulator.admin_url + "distribution/packages/PS1FFFFF", timeout=5).status_code == 404
    assert _admin(admin, emulator, "GET", "distribution")["distribution_points"] == state["distribution_points"]


def test_twenty_dps_with_a_pull_an_offline_and_a_flaky_one_settle_as_each_should(
    emulator_factory: EmulatorFactory,
) -> None:
    """20 DPs (DP20 pull, DP02 offline, DP03 failing 30 % of copies), 10 packages refreshed: DP02 is
    failed at V0 everywhere, DP03 installed at V1 or failed after its retries, every other DP
    installed at V1; the rollup counts agree with the rows."""
    emulator = emulator_factory(
        **_BASIC_HTTP,
        **_FAST_COPIES,
        dp_count=20,
        pull_dp_count=1,
        dp_offline=("DP02",),
        dp_failing=("DP03",),
        dp_failure_share=0.3,
    )
    protocol = winrm_protocol(emulator)
    packages = [_direct_package(emulator, index) for index in range(10)]
    for package in packages:
        _refresh(protocol, emulator, package)
    versions = {package["PackageID"]: package["SourceVersion"] for package in packages}
    pinned = " OR ".join(f"PackageID = '{package_id}'" for package_id in versions)

    def rows() -> list[dict[str, str | None]]:
        return _query(protocol, emulator, _wql("PackageID, ServerNALPath, State, SourceVersion", _SUMMARIZER, pinned))

    def settled() -> bool:
        return all(row["State"] in ("0", "3") for row in rows())

    assert wait_until(settled, timeout_s=_SETTLED_WITHIN_S)
    by_dp: dict[str, set[tuple[str, str]]] = {}
    for row in rows():
        server = (row["ServerNALPath"] or "").rstrip("\\").rsplit("\\", 1)[-1].split(".")[0]
        v0 = versions[row["PackageID"] or ""]
        by_dp.setdefault(server, set()).add((row["State"] or "", "V1" if row["SourceVersion"] == str(v0 + 1) else "V0"))
    assert len(by_dp) == 20
    assert by_dp.pop("DP02") == {("3", "V0")}
    assert by_dp.pop("DP03") <= {("0", "V1"), ("3", "V0")}
    assert all(states == {("0", "V1")} for states in by_dp.values()), by_dp
    for extra in _query(protocol, emulator, _wql("*", "SMS_ObjectContentExtraInfo", pinned)):
        assert extra["Targeted"] == "20" and int(extra["NumberSuccess"] or 0) + int(extra["NumberErrors"] or 0) == 20
        assert 1 <= int(extra["NumberErrors"] or 0) <= 2
