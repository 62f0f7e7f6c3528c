"""The bulk benchmark's command line: bad arguments are refused with a usage error, before anything starts."""

from __future__ import annotations

import pytest

from bench.bulk_bench import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["--parts", "efficiency,speed"],
        ["--fanout-sizes", "2000,lots"],
        ["--worker-setting", "NO_EQUALS_SIGN"],
        ["--worker-setting", "BAD NAME=1"],
        ["--rounds", "0"],
        ["--latency-ms", "-5"],
    ],
)
def test_bad_arguments_stop_with_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Each bad option exits 2 with one line naming the problem, and no report on stdout."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    captured = capsys.readouterr()
    assert stopped.value.code == 2
    assert "error:" in captured.err and captured.out == ""


def test_worker_settings_are_named_with_the_project_prefix() -> None:
    """--worker-setting LIMITS__X=1 (prefix optional, any case) becomes SCCM_REFRESH_LIMITS__X=1."""
    args = build_parser().parse_args(
        [
            "--worker-setting",
            "limits__slot_wait_min_s=0.01",
            "--worker-setting",
            "SCCM_REFRESH_LIMITS__BULK_WINDOW_EXTRA=0",
        ]
    )
    assert args.worker_setting == [
        ("SCCM_REFRESH_LIMITS__SLOT_WAIT_MIN_S", "0.01"),
        ("SCCM_REFRESH_LIMITS__BULK_WINDOW_EXTRA", "0"),
    ]
