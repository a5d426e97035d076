"""The short labels painted on cards and tiles."""

from __future__ import annotations

from poolnet_desktop.gui import formatting as fmt


def test_sizes_share_the_totals_unit() -> None:
    assert fmt.used_of_total(6246.4, 16384.0) == "6.1 / 16.0 GB"
    assert fmt.used_of_total(532480.0, 1024000.0) == "520 / 1000 GB"
    assert fmt.used_of_total(2.5 * 1024**2, 8 * 1024**2) == "2.5 / 8.0 TB"
    assert fmt.used_of_total(300.0, 512.0) == "300 / 512 MB"


def test_percent_is_clamped_and_safe_with_zero_totals() -> None:
    assert fmt.percent(1, 4) == 25.0
    assert fmt.percent(5, 4) == 100.0
    assert fmt.percent(1, 0) == 0.0


def test_platform_and_number_labels() -> None:
    assert fmt.platform_label("darwin") == "macOS"
    assert fmt.platform_label("Windows") == "Windows"
    assert fmt.platform_label("plan9") == "plan9"
    assert fmt.number(64.0) == "64" and fmt.number(12.54) == "12.5"


def test_ago_reads_iso_times_and_survives_bad_ones() -> None:
    base = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    stamp = "2026-01-01T00:00:00.000Z"
    assert fmt.ago(stamp, base + 0.5) == "just now"
    assert fmt.ago(stamp, base + 42) == "42 s ago"
    assert fmt.ago(stamp, base + 5 * 60 + 10) == "5 min ago"
    assert fmt.ago(stamp, base + 3 * 3600) == "3 h ago"
    assert fmt.ago(stamp, base + 2 * 86400) == "2 d ago"
    assert fmt.ago("yesterday", base) == "unknown"
    assert fmt.ago("2026-01-01T00:00:00", base) == "unknown"  # no zone: cannot be placed


def test_ids_and_fingerprints_are_grouped_for_reading_aloud() -> None:
    assert fmt.for_reading_aloud("pn-abcdefghijklmnopqrstuvwxyz") == "pn-abcd efgh ijkl mnop qrst uvwx yz"
    assert fmt.for_reading_aloud("a1b2c3d4e5f6") == "A1B2 C3D4 E5F6"
