"""Unit tests of fault parsing (worker.wsman.faults) and fault meaning (worker.provider.classify) on real captures."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import (
    AccessDeniedError,
    AuthError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    OperationTimeoutError,
    ProtocolError,
    ProviderFailureError,
    QuotaError,
    RefreshError,
    ServerBusyError,
)
from worker.provider.classify import (
    WBEM_E_FAILED,
    WBEM_E_INVALID_CLASS,
    WBEM_E_NOT_FOUND,
    WSMAN_DESTINATION_UNREACHABLE,
    WSMAN_TIMED_OUT,
    classify_exception,
    error_from_wsman,
    fault_to_error,
    hresult_from_win32,
)
from worker.wsman import (
    EnvelopeValueError,
    ExtendedStatus,
    FaultInfo,
    FaultReply,
    MalformedReply,
    ProviderFault,
    WsmanError,
    is_wmi_hresult,
    parse_fault,
)
from worker.wsman.namespaces import NS_SOAP

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"


def _capture(name: str) -> bytes:
    return (CAPTURES / name).read_bytes()


@dataclass(frozen=True)
class Expected:
    file: str
    code: str | None
    subcode: str | None
    wsman_code: int | None
    machine: str | None
    wmi_error_code: int | None
    error: type[RefreshError]


CAPTURE_EXPECTATIONS = [
    Expected("client_pywinrm_must_understand.xml", "s:MustUnderstand", None, None, None, None, InvalidRequestError),
    Expected("client_pywinrm_no_reason.xml", "s:Unknown", None, None, None, None, ProviderFailureError),
    Expected(
        "pywinrm_timed_out.xml",
        "s:Receiver",
        "w:TimedOut",
        2150858793,
        "server2022.domain.test",
        None,
        OperationTimeoutError,
    ),
    Expected(
        "client_pywinrm_schema_validation.xml",
        "s:Sender",
        "w:SchemaValidationError",
        2150858817,
        "SERVER2008.domain.local",
        None,
        InvalidRequestError,
    ),
    Expected("pywinrm_quota_operations.xml", "s:Receiver", "w:InternalError", None, None, 2150859174, QuotaError),
    Expected(
        "pypsrp_invalid_selectors.xml",
        "s:Sender",
        "w:InvalidSelectors",
        2150858843,
        "127.0.0.1",
        None,
        InvalidRequestError,
    ),
    Expected(
        "client_pypsrp_invalid_header.xml",
        "s:Sender",
        "a:InvalidMessageInformationHeader",
        2150858767,
        "127.0.0.1",
        None,
        InvalidRequestError,
    ),
    Expected(
        "client_winrb_wmi_class_not_found.xml",
        "s:Sender",
        "n:CannotProcessFilter",
        2150858778,
        "localhost",
        None,
        InvalidRequestError,
    ),
    Expected("winrb_quota_shells.xml", "s:Sender", "w:QuotaLimit", None, None, 2150859173, QuotaError),
    Expected(
        "omi_wmi_not_found.xml",
        "s:Sender",
        "a:DestinationUnreachable",
        2150858752,
        "10.68.240.26",
        None,
        NotFoundError,
    ),
    Expected(
        "client_omi_provider_fault_text.xml",
        "s:Receiver",
        "w:InternalError",
        2152992672,
        "10.123.175.205",
        None,
        ProviderFailureError,
    ),
]


@pytest.mark.parametrize("expected", CAPTURE_EXPECTATIONS, ids=lambda e: e.file)
def test_real_captures_parse_to_the_expected_fault_and_error(expected: Expected) -> None:
    """Each saved Windows fault yields its code, subcode, WSManFault code, machine and error class."""
    info = parse_fault(_capture(expected.file))

    assert info is not None
    assert (info.code, info.subcode, info.wsman_code, info.machine, info.wmi_error_code) == (
        expected.code,
        expected.subcode,
        expected.wsman_code,
        expected.machine,
        expected.wmi_error_code,
    )
    error = fault_to_error(info, http_status=500)
    assert type(error) is expected.error
    assert error.http_status == 500
    assert error.message.startswith("WS-Man fault [")


def test_wmi_provider_fault_exposes_inner_fault_and_extended_status() -> None:
    """A WMI ProviderFault yields the plug-in, its inner WSManFault and the __ExtendedStatus."""
    info = parse_fault(_capture("client_winrb_wmi_class_not_found.xml"))

    assert info is not None
    assert info.provider_fault == ProviderFault(
        provider="WMI Provider",
        path="%systemroot%\\system32\\WsmWmiPl.dll",
        wsman_code=2150858778,
        machine="vagrant-2008R2",
        message="The specified class does not exist in the given namespace.",
        text=None,
    )
    assert info.extended_status == ExtendedStatus(
        class_name="__ExtendedStatus",
        description=None,
        error_code=None,
        operation="ExecQuery",
        parameter_info='Select * from Win32_Processa where name="sshd.exe"',
        provider_name="WinMgmt",
        status_code=None,
    )
    assert info.text == "The specified class does not exist in the given namespace."
    assert info.message is None


def test_not_found_capture_keeps_fault_detail_and_extended_status() -> None:
    """The Get-of-a-missing-instance capture keeps FaultDetail and the GetObject status."""
    info = parse_fault(_capture("omi_wmi_not_found.xml"))

    assert info is not None
    assert info.fault_detail == "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidResourceURI"
    assert info.extended_status is not None and info.extended_status.operation == "GetObject"
    assert info.provider_fault is not None and info.provider_fault.machine == "VMMUR-W12R2-02.SCX.com"
    error = fault_to_error(info)
    assert error.wsman_code == WSMAN_DESTINATION_UNREACHABLE
    assert error.extended_status == info.extended_status


def test_msft_wmierror_fields_are_kept_raw() -> None:
    """MSFT_WmiError's fields are kept by name, nils as None, and error_Code read as the WMI code."""
    info = parse_fault(_capture("winrb_quota_shells.xml"))

    assert info is not None
    assert info.wmi_error["MessageID"] == "HRESULT 0x803381a5"
    assert info.wmi_error["CIMStatusCodeDescription"] is None
    assert info.wmi_error["error_Code"] == "2150859173"
    assert info.wmi_error_code == 0x803381A5


def test_provider_fault_with_plain_text_keeps_the_text() -> None:
    """A ProviderFault holding text instead of an inner WSManFault keeps that text."""
    info = parse_fault(_capture("client_omi_provider_fault_text.xml"))

    assert info is not None and info.provider_fault is not None
    assert info.provider_fault.provider == "microsoft.powershell"
    assert info.provider_fault.text == (
        "Error with error code -2144108472 occurred while calling method WSManPluginReceiveResult."
    )
    assert info.reason is None
    assert "WSManPluginReceiveResult" in fault_to_error(info).message


def test_a_reply_without_a_fault_parses_to_none() -> None:
    """parse_fault returns None for a normal reply."""
    assert parse_fault(_capture("winrb_pull_response.xml")) is None


# --- SMS Provider faults (documented shape; no public capture exists) ------------------


def _sms_fault(
    *,
    subcode: str = "w:InternalError",
    outer_code: str = "2150859010",
    inner_code: str = "2147749889",
    status_code: str = "2147749889",
    wmi_error_code: str | None = None,
) -> str:
    """A WMI provider fault in the documented shape (no public capture), carrying p:SMS_ExtendedStatus."""
    wmi_error = (
        '<p:MSFT_WmiError xmlns:p="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError">'
        f"<p:error_Code>{wmi_error_code}</p:error_Code></p:MSFT_WmiError>"
        if wmi_error_code is not None
        else ""
    )
    return f"""<s:Envelope xmlns:s="{NS_SOAP}" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
    xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault">
<s:Body><s:Fault>
  <s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>
  <s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot process the request. </s:Text></s:Reason>
  <s:Detail>
    <f:WSManFault Code="{outer_code}" Machine="sccm01">
      <f:Message>
        <f:ProviderFault provider="WMI Provider" path="%systemroot%\\system32\\WsmWmiPl.dll">
          <f:WSManFault Code="{inner_code}" Machine="sccm01">
            <f:Message>Generic failure </f:Message>
          </f:WSManFault>
          <f:ExtendedError>
            <p:SMS_ExtendedStatus xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/SMS_ExtendedStatus"
                xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="p:SMS_ExtendedStatus_Type">
              <p:Description>Source medium is not ready</p:Description>
              <p:ErrorCode>1078462229</p:ErrorCode>
              <p:File>e:\\nts_sccm_release\\sms\\siteserver\\sdk_provider\\smsprov\\sspkg.cpp</p:File>
              <p:Line>2196</p:Line>
              <p:Operation>ExecMethod</p:Operation>
              <p:ParameterInfo>SMS_DriverPackage.PackageID="PS100012"</p:ParameterInfo>
              <p:ProviderName>ExtnProv</p:ProviderName>
              <p:StatusCode>{status_code}</p:StatusCode>
            </p:SMS_ExtendedStatus>
          </f:ExtendedError>
        </f:ProviderFault>
      </f:Message>
    </f:WSManFault>
    {wmi_error}
  </s:Detail>
</s:Fault></s:Body></s:Envelope>"""


def test_sms_extended_status_is_parsed_with_numbers_and_extras() -> None:
    """SMS_ExtendedStatus yields its documented fields, numbers as ints, the rest as extras."""
    info = parse_fault(_sms_fault())

    assert info is not None
    assert info.extended_status == ExtendedStatus(
        class_name="SMS_ExtendedStatus",
        description="Source medium is not ready",
        error_code=1078462229,
        operation="ExecMethod",
        parameter_info='SMS_DriverPackage.PackageID="PS100012"',
        provider_name="ExtnProv",
        status_code=WBEM_E_FAILED,
        extra={"File": "e:\\nts_sccm_release\\sms\\siteserver\\sdk_provider\\smsprov\\sspkg.cpp", "Line": "2196"},
    )
    assert info.wmi_error_code == WBEM_E_FAILED


def test_generic_wmi_failure_is_a_transient_provider_failure() -> None:
    """WBEM_E_FAILED from the SMS Provider maps to ProviderFailureError with its status attached."""
    error = fault_to_error(parse_fault(_sms_fault()) or FaultInfo())

    assert isinstance(error, ProviderFailureError) and error.retryable
    assert error.wmi_code == WBEM_E_FAILED
    assert error.code == WBEM_E_FAILED
    assert error.wsman_code == 2150859010
    assert error.extended_status is not None and error.extended_status.error_code == 1078462229
    assert "Source medium is not ready" in error.message


@pytest.mark.parametrize(
    ("inner_code", "error_class"),
    [
        ("2147749890", NotFoundError),  # 0x80041002 WBEM_E_NOT_FOUND
        ("2147749891", AccessDeniedError),  # 0x80041003 WBEM_E_ACCESS_DENIED
        ("2147749892", ProviderFailureError),  # 0x80041004 WBEM_E_PROVIDER_FAILURE
        ("2147749894", ServerBusyError),  # 0x80041006 WBEM_E_OUT_OF_MEMORY: the provider host's quota
        ("2147749896", InvalidRequestError),  # 0x80041008 WBEM_E_INVALID_PARAMETER
        ("2147749902", ConfigError),  # 0x8004100E WBEM_E_INVALID_NAMESPACE
        ("2147749904", InvalidRequestError),  # 0x80041010 WBEM_E_INVALID_CLASS
        ("2147749911", InvalidRequestError),  # 0x80041017 WBEM_E_INVALID_QUERY
        ("-2147217406", NotFoundError),  # WBEM_E_NOT_FOUND written as a signed HRESULT
        ("0x80041003", AccessDeniedError),  # ... or in hex
    ],
)
def test_wmi_codes_in_the_inner_fault_map_by_meaning(inner_code: str, error_class: type[RefreshError]) -> None:
    """The provider's inner WMI HRESULT decides the error class."""
    info = parse_fault(_sms_fault(inner_code=inner_code, status_code=""))

    assert info is not None
    assert type(fault_to_error(info)) is error_class


@pytest.mark.parametrize(
    ("wmi_error_code", "error_class"),
    [("2147749890", NotFoundError), ("2147749889", ProviderFailureError), ("2150859174", QuotaError)],
)
def test_msft_wmierror_code_decides_over_generic_wsman_codes(
    wmi_error_code: str, error_class: type[RefreshError]
) -> None:
    """An MSFT_WmiError error_Code decides when the WSManFault codes carry no meaning of their own."""
    info = parse_fault(_sms_fault(inner_code="2150858753", wmi_error_code=wmi_error_code))

    assert info is not None and info.wmi_error_code == int(wmi_error_code)
    assert type(fault_to_error(info)) is error_class


def test_specific_wmi_code_outranks_a_generic_subcode() -> None:
    """INVALID_CLASS inside a DestinationUnreachable fault is an invalid request, not not-found."""
    info = FaultInfo(
        subcode="a:DestinationUnreachable",
        wsman_code=WSMAN_DESTINATION_UNREACHABLE,
        wmi_error_code=WBEM_E_INVALID_CLASS,
    )

    assert type(fault_to_error(info)) is InvalidRequestError


def test_generic_wmi_failure_does_not_hide_a_timeout_subcode() -> None:
    """WBEM_E_FAILED is only a fallback: a w:TimedOut subcode still means a timeout."""
    info = FaultInfo(subcode="w:TimedOut", wmi_error_code=WBEM_E_FAILED)

    assert type(fault_to_error(info)) is OperationTimeoutError


@pytest.mark.parametrize(
    ("info", "error_class"),
    [
        (FaultInfo(subcode="w:AccessDenied", wsman_code=5), AccessDeniedError),
        (FaultInfo(subcode="w:AccessDenied"), AccessDeniedError),
        (FaultInfo(wsman_code=0x80070005), AccessDeniedError),
        (FaultInfo(subcode="a:ActionNotSupported"), InvalidRequestError),
        (FaultInfo(subcode="{http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd}QuotaLimit"), QuotaError),
        (FaultInfo(wsman_code=WSMAN_TIMED_OUT), OperationTimeoutError),
        (FaultInfo(wsman_code=2150859173), QuotaError),
        (FaultInfo(wmi_error_code=WBEM_E_NOT_FOUND), NotFoundError),
        (FaultInfo(code="s:Receiver", subcode="w:InternalError"), ProviderFailureError),
        (FaultInfo(), ProviderFailureError),
    ],
)
def test_codes_and_subcodes_map_by_meaning(info: FaultInfo, error_class: type[RefreshError]) -> None:
    """Subcodes (any prefix) and numeric codes map to the error classes docs/errors.md lists."""
    assert type(fault_to_error(info)) is error_class


def test_error_messages_come_from_fault_text_and_codes_only() -> None:
    """The message is built from the fault's own text and codes, with the codes in hex."""
    info = FaultInfo(subcode="w:TimedOut", reason="  took\n too   long  ", wsman_code=WSMAN_TIMED_OUT)

    assert fault_to_error(info).message == "WS-Man fault [w:TimedOut, 0x80338029]: took too long"


def test_is_wmi_hresult_recognises_facility_itf_codes() -> None:
    """0x8004xxxx codes are WMI HRESULTs; WS-Man and Win32 codes are not."""
    assert is_wmi_hresult(WBEM_E_FAILED)
    assert not is_wmi_hresult(WSMAN_TIMED_OUT)
    assert not is_wmi_hresult(5)
    assert not is_wmi_hresult(None)


@pytest.mark.parametrize("reply", [b"", b"not xml", b"<a/>", "<s:Envelope xmlns:s='urn:x'/>"])
def test_junk_is_a_protocol_error_not_a_parse_error(reply: bytes | str) -> None:
    """Unparseable or non-SOAP input raises MalformedReply, which classifies as ProtocolError."""
    with pytest.raises(MalformedReply) as caught:
        parse_fault(reply)

    assert type(error_from_wsman(caught.value)) is ProtocolError


_FAULT_PARTS = st.sampled_from(
    [
        "<s:Code><s:Value>s:Sender</s:Value></s:Code>",
        "<s:Code><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code>",
        "<s:Reason><s:Text/></s:Reason>",
        "<s:Detail><f:WSManFault Code='{n}'><f:Message><f:ProviderFault/></f:Message></f:WSManFault></s:Detail>",
        "<s:Detail><f:WSManFault Code='{n}' Machine=''><f:Message><f:ProviderFault><f:WSManFault Code='{n}'/>"
        "<f:ExtendedError><p:X><p:StatusCode>{n}</p:StatusCode><p:ErrorCode/></p:X></f:ExtendedError>"
        "</f:ProviderFault></f:Message></f:WSManFault></s:Detail>",
        "<s:Detail><p:MSFT_WmiError><p:error_Code>{n}</p:error_Code></p:MSFT_WmiError></s:Detail>",
        "<s:Detail><p:SMS_ExtendedStatus><p:StatusCode xsi:nil='true'/></p:SMS_ExtendedStatus></s:Detail>",
    ]
)
_XML_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="&<'"), max_size=12)
_CODES = st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str), _XML_TEXT)


@given(parts=st.lists(st.tuples(_FAULT_PARTS, _CODES), max_size=5))
@settings(max_examples=300, deadline=None)
def test_any_fault_shape_parses_and_maps_without_raising(parts: list[tuple[str, str]]) -> None:
    """Partial, odd and oversized fault content always parses and maps to some RefreshError."""
    inner = "".join(template.replace("{n}", code) for template, code in parts)
    reply = (
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        'xmlns:p="urn:p" xmlns:w="urn:w" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<s:Body><s:Fault>{inner}</s:Fault></s:Body></s:Envelope>"
    )
    info = parse_fault(reply)

    assert info is not None
    assert isinstance(fault_to_error(info), RefreshError)


@given(reply=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
@settings(max_examples=300, deadline=None)
def test_parse_fault_raises_only_protocol_errors_on_junk(reply: bytes | str) -> None:
    """Random bytes and text either parse or raise MalformedReply (a ProtocolError), nothing else."""
    with contextlib.suppress(MalformedReply):
        parse_fault(reply)


# --- Win32 errors: permanent when they cannot heal, transient when they can -----------


@pytest.mark.parametrize(
    ("win32_code", "error_class"),
    [
        (2, NotFoundError),  # ERROR_FILE_NOT_FOUND
        (3, NotFoundError),  # ERROR_PATH_NOT_FOUND
        (67, NotFoundError),  # ERROR_BAD_NET_NAME
        (5, AccessDeniedError),  # ERROR_ACCESS_DENIED
        (6, InvalidRequestError),  # ERROR_INVALID_HANDLE
        (50, InvalidRequestError),  # ERROR_NOT_SUPPORTED
        (87, InvalidRequestError),  # ERROR_INVALID_PARAMETER
        (123, InvalidRequestError),  # ERROR_INVALID_NAME
        (1326, AuthError),  # ERROR_LOGON_FAILURE
        (1330, AuthError),  # ERROR_PASSWORD_EXPIRED
        (1331, AuthError),  # ERROR_ACCOUNT_DISABLED
        (1909, AuthError),  # ERROR_ACCOUNT_LOCKED_OUT
        (14, ServerBusyError),  # ERROR_OUTOFMEMORY
        (1460, OperationTimeoutError),  # ERROR_TIMEOUT
    ],
)
def test_win32_errors_mean_the_same_bare_or_as_an_hresult(win32_code: int, error_class: type[RefreshError]) -> None:
    """`Code="87"` and 0x80070057 (signed or not) are one meaning."""
    hresult = hresult_from_win32(win32_code)
    signed = hresult - 2**32

    for info in (FaultInfo(wsman_code=win32_code), FaultInfo(wsman_code=hresult), FaultInfo(wmi_error_code=hresult)):
        assert type(fault_to_error(info)) is error_class
    assert type(fault_to_error(parse_fault(_sms_fault(inner_code=str(signed), status_code="")) or FaultInfo())) is (
        error_class
    )


@pytest.mark.parametrize(
    "win32_code",
    [21, 32, 33, 53, 59, 64, 112, 1115, 1231, 1311, 1355, 1722, 1726, 1727],
    ids=lambda code: f"0x{hresult_from_win32(code):08X}",
)
def test_win32_errors_that_can_heal_stay_transient(win32_code: int) -> None:
    """Not ready, in use, network path gone, disk full, no DC, RPC unavailable: retried, not failed."""
    for code in (win32_code, hresult_from_win32(win32_code)):
        error = fault_to_error(FaultInfo(subcode="w:InternalError", wsman_code=code))
        assert type(error) is ProviderFailureError and error.retryable


def test_a_specific_win32_code_outranks_a_generic_wmi_failure() -> None:
    """WBEM_E_FAILED around an inner 0x80070002 is the missing file, not a provider failure."""
    info = FaultInfo(wsman_code=WBEM_E_FAILED, provider_fault=ProviderFault(wsman_code=hresult_from_win32(2)))

    assert type(fault_to_error(info)) is NotFoundError


@pytest.mark.parametrize(
    ("subcode", "error_class"),
    [("w:InvalidParameter", InvalidRequestError), ("n:InvalidEnumerationContext", InvalidRequestError)],
)
def test_subcodes_that_cannot_succeed_on_retry_are_invalid_requests(
    subcode: str, error_class: type[RefreshError]
) -> None:
    """A bad parameter, or a Pull on a context the server dropped, fails the same way every time."""
    error = fault_to_error(FaultInfo(code="s:Sender", subcode=subcode))

    assert type(error) is error_class and not error.retryable


# --- the WS-Man layer's exceptions ----------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "error_class", "http_status"),
    [
        (FaultReply(FaultInfo(subcode="w:TimedOut")), OperationTimeoutError, None),
        (FaultReply(FaultInfo(subcode="w:QuotaLimit"), http_status=500), QuotaError, 500),
        (MalformedReply("reply Body is empty"), ProtocolError, None),
        (EnvelopeValueError("invalid selector name ''"), InvalidRequestError, None),
    ],
)
def test_wsman_exceptions_classify_by_meaning(
    exc: WsmanError, error_class: type[RefreshError], http_status: int | None
) -> None:
    """FaultReply means its fault (HTTP status kept), MalformedReply a ProtocolError, bad values invalid."""
    error = error_from_wsman(exc)

    assert type(error) is error_class and error.http_status == http_status
    assert type(classify_exception(exc)) is error_class
