"""The HTML report, in a real headless Chromium: cards, thumbnails, no script from file names.

Chromium is Debian's (/usr/bin/chromium), driven by Python playwright; the
CI installs both (see .ci/run), so these tests never skip.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

import dupfinder
from dupfinder.html_report import display_text, human_size, render_html
from dupfinder.models import DuplicateGroup, Member, ScanError, ScanResult, ScanSettings

CHROMIUM = os.environ.get("DUPFINDER_CHROMIUM", "/usr/bin/chromium")
HOSTILE = "<img src=x onerror=alert(1)>.jpg"
# A file name cannot hold "/", so the folder ends in "<" and the file starts
# with "script>": the path reads ...q"uo'te</script><!--x.jpg.
QUOTED_DIR, QUOTED_FILE = "q\"uo'te<", "script><!--x.jpg"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield b
        b.close()


class Page:
    """A browser tab that records dialogs, console errors and page errors."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))


@pytest.fixture
def hostile_scan(tmp_path, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in photos[:5]:
        shutil.copyfile(src, folder / src.name)
    shutil.copyfile(photos[0], folder / HOSTILE)
    (folder / QUOTED_DIR).mkdir()
    shutil.copyfile(photos[1], folder / QUOTED_DIR / QUOTED_FILE)
    shutil.copyfile(photos[2], os.path.join(os.fsencode(folder), b"latin1-\xe9.jpg"))
    shutil.copyfile(photos[3], folder / "gone soon.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = dupfinder.scan([folder], workers=0)
    (folder / "gone soon.jpg").unlink()  # deleted after the scan: a placeholder, not a crash
    return folder, result


def test_report_in_chromium_shows_cards_thumbnails_and_runs_no_file_name(browser, hostile_scan, tmp_path):
    folder, result = hostile_scan
    assert len(result.groups) == 4 and len(result.errors) == 1
    out = tmp_path / "report.html"
    dupfinder.write_report(result, output=out, renderer=render_html)
    tab = Page(browser)
    tab.page.goto(out.as_uri())
    page = tab.page
    assert page.locator(".card").count() == len(result.groups)
    members = sum(len(g) for g in result.groups)
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth)")
    assert len(widths) == members - 1 and all(w and w > 0 for w in widths)
    missing = page.locator(".thumb.missing")
    assert missing.count() == 1 and "vanished" in missing.inner_text()
    assert page.locator(".member.keep").count() == len(result.groups)
    assert page.locator(".member.keep .badge").first.inner_text() == "KEEP"

    assert page.inner_text("#count-found") == str(result.counts["found"])
    assert page.inner_text("#count-groups") == "4"
    assert page.inner_text("#count-errors") == "1"
    freed = sum(m.size for g in result.groups for m in g.members if not m.keep)
    assert page.inner_text("#count-freeable") == human_size(freed)
    page.click("details.errors summary")
    assert "broken.jpg" in page.inner_text("details.errors")

    paths = page.locator(".path").all_inner_texts()
    assert str(folder / HOSTILE) in paths
    assert str(folder / QUOTED_DIR / QUOTED_FILE) in paths
    assert str(folder) + "/latin1-\\xe9.jpg" in paths
    assert page.get_by_text(HOSTILE, exact=False).count() >= 1
    assert page.locator('img[src="x"]').count() == 0
    page.wait_for_timeout(200)
    assert tab.dialogs == []
    assert tab.errors == []  # a CSP violation would be a console error
    assert all(url.startswith(("file:", "data:")) for url in tab.requests)

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    page.close()


def test_raw_html_holds_no_live_markup_from_file_names(hostile_scan):
    _, result = hostile_scan
    buf = io.StringIO()
    render_html(result, buf)
    text = buf.getvalue()
    assert "<img" not in text and "<!--" not in text
    assert text.count("</script>") == 2  # the data element's and the script's own
    assert "innerHTML" not in text
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "http" not in csp
    script = re.search(r"<script>(.*?)</script>", text, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    for body in (script, style):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert not re.search(r"(src|href)=\"(?!data:)", text)  # nothing is loaded from anywhere


def test_names_that_are_not_utf8_render(tmp_path):
    odd = os.fsdecode(b"/photos/\xff\xfe-odd.jpg")
    member = Member(odd, True, 0, 10, 10, 1000, 0, "00")
    result = ScanResult(
        ScanSettings(roots=(os.fsdecode(b"/ph\xffotos"),)),
        files=(),
        groups=(DuplicateGroup(1, (member, Member("/photos/b.jpg", False, 1, 10, 10, 500, 0, "01")), 1),),
        errors=(ScanError(odd, "open", "bad \udcff byte"),),
    )
    buf = io.StringIO()
    render_html(result, buf)
    buf.getvalue().encode("utf-8")  # strict: no lone surrogate reached the page
    assert display_text(odd) == "/photos/\\xff\\xfe-odd.jpg"
    assert "\\\\xff\\\\xfe-odd.jpg" in buf.getvalue()  # inside the JSON, the backslash is escaped


def _synthetic(real: list[Path], n_groups: int) -> ScanResult:
    paths = [str(p) for p in real] + ["/no/such/file.jpg"]
    groups = []
    for i in range(1, n_groups + 1):
        members = tuple(
            Member(paths[(i + j) % len(paths)], j == 0, 2 * j, 640, 480, 30_000 + j, 1_700_000_000 * 10**9,
                   "0123456789abcdef", "mirror" if j == 2 else "")
            for j in range(3)
        )
        groups.append(DuplicateGroup(i, members, 4))
    counts = {"found": 3 * n_groups, "hashed": 3 * n_groups, "errors": 0, "groups": n_groups,
              "duplicates": 2 * n_groups}
    return ScanResult(ScanSettings(roots=("/photos",)), (), tuple(groups), (), counts=counts)


def test_ten_thousand_groups_open_one_page_at_a_time(browser, photos, tmp_path):
    result = _synthetic(photos[:3], 10_000)
    out = tmp_path / "big.html"
    started = time.monotonic()
    dupfinder.write_report(result, output=out, renderer=render_html)
    print(f"rendered 10^4 groups in {time.monotonic() - started:.2f}s, {out.stat().st_size} bytes")
    assert out.stat().st_size < 20_000_000  # thumbnails are shared by path, not repeated
    tab = Page(browser)
    page = tab.page
    page.goto(out.as_uri(), timeout=60_000)
    cards = page.locator(".card")
    assert cards.count() == 200
    assert cards.first.get_attribute("id") == "group-1"
    where = page.locator("nav.pager .where").first
    assert where.inner_text().startswith("Page 1 of 50")
    page.locator("nav.pager .next").first.click()
    # (expect polls from outside the page: this page's CSP forbids eval, which
    # page.wait_for_function with a string would need.)
    expect(cards.first).to_have_id("group-201")
    assert cards.count() == 200 and where.inner_text().startswith("Page 2 of 50")
    page.locator("nav.pager .last").first.click()
    expect(cards.first).to_have_id("group-9801")
    assert cards.last.get_attribute("id") == "group-10000"
    assert page.locator("nav.pager .next").first.is_disabled()
    page.locator("nav.pager input").first.fill("7")
    page.locator("nav.pager input").first.dispatch_event("change")
    expect(cards.first).to_have_id("group-1201")
    page.go_back()  # the page number is in the URL, so Back works
    expect(cards.first).to_have_id("group-9801")
    assert page.locator(".thumb.missing").count() == 150  # the missing file, once per card it is in
    assert tab.errors == [] and tab.dialogs == []
    page.close()


def test_partial_copies_show_their_box_on_the_picture_they_are_in(browser, tmp_path):
    # A crop's box is drawn on the kept file (the part it shows); a picture
    # inside a larger frame has the kept file's place drawn on itself.
    pytest.importorskip("cv2")
    from .conftest import ORIGINALS, open_rgb

    folder = tmp_path / "tree"
    folder.mkdir()
    art = open_rgb(ORIGINALS / "p0005.jpg")
    art.save(folder / "p0005.jpg", quality=92)
    art.crop((70, 10, 320, 215)).save(folder / "part.jpg", quality=90)
    result = dupfinder.scan([folder], workers=0, partial=True)
    (group,) = result.groups
    part = next(m for m in group.members if not m.keep)
    assert part.transform == "crop" and part.box is not None
    html = tmp_path / "r.html"
    dupfinder.write_report(result, format="html", output=html)
    tab = Page(browser)
    tab.page.goto(html.as_uri())
    boxes = tab.page.locator(".member.keep .box")
    assert boxes.count() == 1
    frame = tab.page.locator(".member.keep .frame").bounding_box()
    drawn = boxes.first.bounding_box()
    left, top, right, bottom = part.box
    kept = group.members[0]
    # Where the box lies on the thumbnail, as fractions of it: the report's box.
    assert abs((drawn["x"] - frame["x"]) / frame["width"] - left / kept.width) < 0.02
    assert abs((drawn["y"] - frame["y"]) / frame["height"] - top / kept.height) < 0.02
    assert abs(drawn["width"] / frame["width"] - (right - left) / kept.width) < 0.02
    assert "box 2 on the kept file" in tab.page.locator(".member:not(.keep)").inner_text()
    # Each path is a link to its file, absolute, so the page works from anywhere.
    links = tab.page.locator(".member .path a")
    assert sorted(links.evaluate_all("as => as.map(a => a.href)")) == sorted(
        Path(m.path).resolve().as_uri() for m in group.members)
    assert tab.errors == [] and all(u.startswith("file:") or u.startswith("data:") for u in tab.requests)


def test_decisions_saved_from_the_page_are_the_csv_report_with_the_keep_column_changed(browser, hostile_scan,
                                                                                        tmp_path):
    # Review in the browser, save, then `dupfinder apply`: the saved file is
    # the CSV report byte for byte but for the reviewer's keep choices, names
    # that are not UTF-8, hold commas, quotes or markup included.
    from dupfinder.cli import main

    folder, result = hostile_scan
    csv_report = tmp_path / "report.csv"
    dupfinder.write_report(result, format="csv", output=csv_report)
    html = tmp_path / "report.html"
    dupfinder.write_report(result, format="html", output=html)
    tab = Page(browser)
    page = tab.page
    page.goto(html.as_uri())
    latin = next(i for i, c in enumerate(page.locator(".member").all()) if "latin1" in c.inner_text())
    flip = page.locator(".member .choice input").nth(latin)
    was = flip.is_checked()
    flip.click()
    assert "1 file changed" in page.inner_text(".decisions")
    with page.expect_download() as download:
        page.click("button.save")
    saved = Path(download.value.path()).read_bytes()
    expected = csv_report.read_bytes().split(b"\n")
    got = saved.split(b"\n")
    assert len(got) == len(expected)
    changed = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert len(changed) == 1 and b"latin1-\xe9.jpg" in got[changed[0]]
    before, after = (b",yes,", b",no,") if was else (b",no,", b",yes,")
    assert got[changed[0]] == expected[changed[0]].replace(before, after, 1)
    decisions = tmp_path / "decisions.csv"
    decisions.write_bytes(saved)
    assert main(["apply", str(decisions), "--action", "delete"]) == 0  # a dry run that reads every row
    # What the page shows follows the choice: the badge, the frame, the counts.
    figure = page.locator(".member").nth(latin)
    assert figure.locator(".badge").first.inner_text() == ("duplicate" if was else "KEEP")
    assert ("keep" in figure.get_attribute("class").split()) is not was
    assert page.inner_text("#count-duplicates") == str(result.counts["duplicates"] + (1 if was else -1))
    # Away and Back: the boxes show what a save would write (the scan's
    # choice again), never a restored tick the saved file would not follow.
    page.goto("about:blank")
    page.go_back()
    assert page.locator(".member .choice input").nth(latin).is_checked() is was
    assert page.inner_text(".decisions") == ""
    assert tab.errors == []
