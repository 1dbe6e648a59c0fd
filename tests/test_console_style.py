"""The console's stylesheet keeps what docs/console.md promises: WCAG 2.1 AA contrast
(text 4.5:1, graphics and focus 3:1, computed with the WCAG formula from the colours the
stylesheet sets) and print rules that hide navigation and forms. Pure: the file is read,
nothing is served; the browser test checks the same rules as Chromium applies them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from api.console.web import STATIC, TEMPLATES
from api.pictures import ACTION_COLOURS, OTHER_COLOUR, Lane, Mark, timeline_svg

CSS = (STATIC / "console.css").read_text()
PAGE = "#ffffff"  # body { background: #fff }
TEXT_AA = 4.5  # WCAG 2.1 1.4.3, normal-size text
GRAPHICS_AA = 3.0  # 1.4.11: marks, swatches, focus rings, control borders


def luminance(colour: str) -> float:
    """Relative luminance (WCAG 2.1) of ``#rgb`` or ``#rrggbb``."""
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    channels = []
    for i in (0, 2, 4):
        c = int(digits[i:i + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = channels
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_contrast_formula_on_known_pairs() -> None:
    # WCAG's own end points, and #767676, the lightest grey that passes 4.5:1 on white
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#fff", "#fff") == pytest.approx(1.0)
    assert 4.5 < contrast("#767676", "#fff") < 4.6 and contrast("#777777", "#fff") < 4.5


def _strip(css: str) -> str:
    return re.sub(r"/\*.*?\*/", "", css, flags=re.S)


def _split_media(css: str) -> tuple[str, dict[str, str]]:
    """The top-level rules and each ``@media`` block's inner text, by its query."""
    media: dict[str, str] = {}
    out, i = [], 0
    for m in re.finditer(r"@media([^{]+)\{", css):
        if m.start() < i:
            continue
        depth, j = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(css[j], 0)
            j += 1
        out.append(css[i:m.start()])
        media[m.group(1).strip()] = css[m.end():j - 1]
        i = j
    out.append(css[i:])
    return "".join(out), media


def _rules(block: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    variables = dict(re.findall(r"(--[\w-]+)\s*:\s*([^;]+);", CSS))
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", block):
        decls = {}
        for decl in body.split(";"):
            if ":" in decl:
                name, value = decl.split(":", 1)
                decls[name.strip()] = re.sub(r"var\((--[\w-]+)\)",
                                             lambda m: variables[m.group(1)].strip(),
                                             value.strip())
        yield [s.strip() for s in selectors.split(",")], decls


def _colour(value: str) -> str | None:
    found = re.search(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b", value)
    return found.group(0) if found else None


SCREEN, MEDIA = _split_media(_strip(CSS))
RULES = list(_rules(SCREEN))


def _by_selector() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for selectors, decls in RULES:
        for s in selectors:
            out.setdefault(s, {}).update(decls)
    return out


def text_pairs() -> list[tuple[str, str, str]]:
    """``(what, text colour, background)`` for all text the stylesheet colours.

    A rule with its own background is read against it (a button's white on blue; a
    ``:hover`` background with the text colour of its plain selector). Every other text
    colour may sit on the page or on any background that holds text (the filter bar, a
    break-the-glass row, the skip link), so it is checked against each of them."""
    by = _by_selector()
    texts: dict[str, str] = {}
    grounds: dict[str, str] = {"body": PAGE}
    own: list[tuple[str, str, str]] = []
    for selectors, decls in RULES:
        fg = _colour(decls.get("color", ""))
        bg = _colour(decls.get("background", "") or decls.get("background-color", ""))
        label = ", ".join(selectors)
        if any(".action-" in s or ".swatch" in s for s in selectors):
            continue  # marks and swatches: graphics, below
        if bg is not None:
            if fg is None:
                plain = by.get(re.sub(r":[\w-]+$", "", selectors[0]), {})
                fg = _colour(plain.get("color", ""))
            if fg is None:
                grounds[label] = bg  # a background for any text
            else:
                own.append((label, fg, bg))
        elif fg is not None:
            texts[label] = fg
        if "label" in label and "fill" in decls and (f := _colour(decls["fill"])):
            texts[label] = f  # SVG text is drawn by its fill
    return own + [(f"{t} on {g}", fg, bg) for t, fg in texts.items()
                  for g, bg in grounds.items()]


def graphic_colours() -> list[tuple[str, str]]:
    """``(what, colour)`` of everything drawn that must stand out 3:1 from the page."""
    out = []
    for selectors, decls in RULES:
        label = ", ".join(selectors)
        for prop in ("fill", "background", "outline", "border", "border-color"):
            colour = _colour(decls.get(prop, ""))
            marks = any(".action-" in s or ".swatch" in s for s in selectors)
            if colour is None:
                continue
            if (prop in ("fill", "background") and marks) or prop == "outline" or (
                    prop.startswith("border") and (marks or "input" in selectors)):
                out.append((f"{label} {prop}", colour))
    return out


def test_every_text_colour_meets_4_5_to_1_on_its_backgrounds() -> None:
    pairs = text_pairs()
    # what the pages actually use must be among them
    names = " ".join(p[0] for p in pairs)
    for expected in ("body", "a on body", ".meta on .filters", ".problem on", "button:hover"):
        assert expected in names, expected
    assert any(p[2] == "#f3f3f3" for p in pairs) and any(p[2] == "#fdecec" for p in pairs)
    failing = [(what, fg, bg, round(contrast(fg, bg), 2)) for what, fg, bg in pairs
               if contrast(fg, bg) < TEXT_AA]
    assert not failing, failing


def test_marks_swatches_focus_and_control_borders_meet_3_to_1() -> None:
    colours = graphic_colours()
    names = " ".join(c[0] for c in colours)
    for expected in (":focus-visible outline", ".action-read", ".action-disclose",
                     ".swatch.ring border", "input, select, button border"):
        assert expected in names, expected
    failing = [(what, c, round(contrast(c, PAGE), 2)) for what, c in colours
               if contrast(c, PAGE) < GRAPHICS_AA]
    assert not failing, failing


def test_focus_is_drawn_3px_wide() -> None:
    focus = _by_selector()[":focus-visible"]
    width = re.match(r"(\d+)px solid", focus["outline"])
    assert width and int(width.group(1)) >= 3


def test_print_hides_navigation_and_forms() -> None:
    assert "print" in MEDIA, "no @media print block"
    hidden = {s for selectors, decls in _rules(MEDIA["print"])
              if decls.get("display") == "none" for s in selectors}
    for selector in (".top nav", ".filters", ".pager", ".skip", "form"):
        assert selector in hidden, selector
    # the hidden classes are the ones the templates put on navigation and forms
    templates = TEMPLATES
    base = (templates / "base.html").read_text()
    assert re.search(r'<header class="top">.*<nav ', base, re.S)
    assert 'class="skip"' in base
    used = " ".join(p.read_text() for p in templates.glob("*.html"))
    assert 'class="filters"' in used and 'class="pager"' in used


def test_the_pictures_colours_stand_out_from_their_lanes() -> None:
    """The SVG pictures colour marks and text with presentation attributes (no CSS needed
    to read them, e.g. in the printed report): marks 3:1 and text 4.5:1 against every lane
    shade a timeline draws, and the stylesheet's swatches the same colours as the marks."""
    when = datetime(2026, 11, 20, 9, tzinfo=UTC)
    marks = [Mark(f"u{i}", when + timedelta(hours=i), action,
                  "ETREAT" if i == 0 else "TREAT", "x", alert=i == 1, seq=i + 1)
             for i, action in enumerate([*ACTION_COLOURS, "staff_added"])]
    svg = timeline_svg(marks, lanes=[Lane(m.lane, m.lane, None) for m in marks])
    shades = set(re.findall(r'<rect class="lane"[^>]*fill="(#[0-9a-f]{6})"', svg))
    assert len(shades) == 2  # alternating lanes
    drawn = set(re.findall(r'(?:fill|stroke)="(#[0-9a-f]{6})"', svg)) - shades
    texts = set(re.findall(r'<text[^>]*fill="(#[0-9a-f]{6})"', svg))
    assert set(ACTION_COLOURS.values()) | {OTHER_COLOUR, "#c00000"} <= drawn
    failing = [(c, s) for c in drawn for s in shades
               if contrast(c, s) < (TEXT_AA if c in texts else GRAPHICS_AA)]
    assert not failing, failing
    swatches = {s.split(".action-")[1]: _colour(d.get("fill", ""))
                for selectors, d in RULES for s in selectors if s.startswith("svg .action-")}
    assert swatches == {**ACTION_COLOURS, "other": OTHER_COLOUR}
