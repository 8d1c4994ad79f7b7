"""_make_divisible: the channel rounding every MobileNetV3/EfficientNet checkpoint depends on."""
import itertools

import pytest

from excite.vision.models._utils import _make_divisible

# (v, divisor, min_value) covering the tricky spots: exact halves (int() truncates, no banker's rounding),
# the 10% rule, min_value, float noise from width multipliers (24 * 1.1 = 26.400000000000002).
CASES = (
    [(v, 8, None) for v in (0, 1, 3.9999, 4, 4.0001, 8, 11.9999, 12, 12.0001, 15, 16, 19.9, 20, 20.1, 28, 36, 44)]
    + [(v, 8, None) for v in (9, 10, 10.5, 11, 17, 18, 19, 27, 35, 70, 71, 72, 75, 76, 77)]
    + [(c * w, 8, None) for c, w in itertools.product((16, 24, 32, 40, 72, 88, 96, 112, 120, 144, 160, 192, 240,
                                                         288, 320, 576, 960, 1024, 1280),
                                                        (0.25, 0.35, 0.5, 0.75, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0))]
    + [(v, d, m) for v, d, m in itertools.product((1, 5, 7.5, 13, 31.5, 100.25), (1, 3, 4, 16, 32), (None, 1, 8, 64))]
    + [(c * r, 8, None) for c, r in itertools.product((16, 24, 40, 80, 112, 192), (1, 4, 6, 1.5, 0.25))]
)


def test_make_divisible_matches_torchvision_table(torchvision):
    from torchvision.models._utils import _make_divisible as tv_make_divisible

    table = [(v, d, m, tv_make_divisible(v, d, m)) for v, d, m in CASES]
    mismatches = [(v, d, m, want, _make_divisible(v, d, m)) for v, d, m, want in table
                  if _make_divisible(v, d, m) != want]
    assert not mismatches, f"(v, divisor, min_value, torchvision, excite): {mismatches[:10]}"
    # the table must exercise both the truncating round and the 10% bump, or it proves little
    assert any(want < v for v, _, _, want in table) and any(want > v + d / 2 for v, d, _, want in table)


@pytest.mark.parametrize("v, divisor, min_value, expected", [
    (12, 8, None, 16),      # 12 + 4 = 16 -> 16: a half rounds up
    (43.9999, 8, None, 40),  # int(47.9999) // 8 * 8 = 40 >= 0.9 * 43.9999: truncated, not rounded
    (44, 8, None, 48),
    (19.9999, 8, None, 24),  # truncates to 16, but 16 < 0.9 * 19.9999, so + 8
    (11.9999, 8, None, 16),  # truncates to 8, but 8 < 0.9 * 11.9999, so + 8
    (10, 8, None, 16),      # rounds to 8, but 8 < 9 (90%) so one divisor is added back
    (3, 8, None, 8),        # min_value defaults to the divisor
    (3, 8, 1, 9),           # int(7) // 8 * 8 = 0 -> max(1, 0) = 1 < 2.7, so + 8: not a multiple of 8!
    (26.400000000000002, 8, None, 24),  # 24 * 1.1 (EfficientNet-B2's stem)
    (72 // 4, 8, None, 24),  # SE width of MobileNetV3's 72-channel block: 18 -> 16 < 16.2 -> 24
])
def test_make_divisible_known_values(v, divisor, min_value, expected):
    assert _make_divisible(v, divisor, min_value) == expected
    assert isinstance(_make_divisible(v, divisor, min_value), int)
