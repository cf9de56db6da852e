from inference.render import get_font, wrap_text


def test_long_captions_wrap_within_the_image() -> None:
    font = get_font(12)
    text = "#1 ground-glass lung nodule, right lung, 26.6 x 23.9 mm (mean 25.3 mm), 7017 mm3"
    lines = wrap_text(text, font, 200)
    assert len(lines) > 1
    assert all(font.getlength(line) <= 200 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_chinese_without_spaces_wraps_between_characters() -> None:
    font = get_font(12)
    text = "右肺上叶磨玻璃结节，平均直径二十五点三毫米，建议六至十二个月复查" * 2
    lines = wrap_text(text, font, 120)
    assert len(lines) > 1 and "".join(lines) == text
    assert all(font.getlength(line) <= 120 for line in lines)


def test_short_text_is_one_line() -> None:
    assert wrap_text("AI result", get_font(12), 300) == ["AI result"]
