"""Write a scan result as one self-contained HTML page of thumbnails, for a person to review.

The page works offline and loads nothing: thumbnails are small JPEGs inside
``data:`` URIs, the style and script are inline, and a Content-Security-Policy
allows exactly those (the style and script by their SHA-256, images only as
``data:``), so even a hostile file name could not run or fetch anything.

How it stays fast at 10^4 groups: the groups are one JSON document in a
``<script type="application/json">`` element, which the browser keeps as
text, and a small script builds the DOM for one page of ``page_size`` groups
at a time with ``textContent`` and ``createElement`` only (never
``innerHTML``). Pre-rendering every group as hidden HTML would make the
browser parse and lay out all of them, tens of thousands of elements and
every thumbnail's attribute, before showing the first; here it parses one
string and builds two hundred cards. The JSON is written with ``<``, ``>``
and ``&`` as ``\\u003c``, ``\\u003e`` and ``\\u0026``, so no file name can
close the element (``</script>``) or open a comment (``<!--``).

Each distinct path is decoded once, with JPEG draft decoding: about 12 ms
for a 12-megapixel photo, so 25,000 images take some five minutes. A
160-pixel thumbnail is 4-7 kB, about 7 kB in base64: 25,000 images made a
180 MB page that headless Chromium opened in 4 s here, and turned a page of
it in 0.1 s.

>>> import io
>>> from dupfinder.models import ScanResult, ScanSettings
>>> buf = io.StringIO()
>>> render_html(ScanResult(ScanSettings(roots=(".",)), (), (), ()), buf)
>>> "Content-Security-Policy" in buf.getvalue() and "innerHTML" not in buf.getvalue()
True
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from .imaging import load_image
from .models import ScanError, ScanResult, UsageError
from .report import CSV_COLUMNS, csv_row, csv_text, format_time

__all__ = ["render_html", "thumbnail", "human_size", "display_text"]


def human_size(n: int) -> str:
    """A byte count in decimal units, as file managers show it.

    >>> human_size(999), human_size(1_500_000), human_size(0)
    ('999 B', '1.5 MB', '0 B')
    """
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    value, i = float(n), 0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return f"{n} B" if i == 0 else f"{value:.1f} {units[i]}"


def display_text(text: str) -> str:
    """A path as text a page can show: bytes that are not UTF-8 become ``\\xNN``.

    >>> import os
    >>> display_text(os.fsdecode(b"caf\\xe9.jpg")), display_text("café.jpg")
    ('caf\\\\xe9.jpg', 'café.jpg')
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file system produced
        return text.encode("utf-8", "backslashreplace").decode("ascii")
    return raw.decode("utf-8", "backslashreplace")


def thumbnail(path: str, *, size: int = 160, quality: int = 70) -> tuple[str, int, int] | ScanError:
    """A small JPEG of the image as a viewer shows it: (base64, width, height), or why not.

    >>> import tempfile
    >>> from PIL import Image
    >>> p = tempfile.mktemp(suffix=".png")
    >>> Image.new("RGB", (640, 320), "blue").save(p)
    >>> thumbnail(p, size=160)[1:]
    (160, 80)
    >>> thumbnail(p + ".gone").message
    'file vanished before it could be read'
    """
    decoded = load_image(path, min_size=size)
    if isinstance(decoded, ScanError):
        return decoded
    try:
        image = decoded.image
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=quality, optimize=True)
    except (OSError, ValueError, MemoryError) as exc:
        return ScanError(path, "thumbnail", str(exc) or type(exc).__name__)
    return base64.b64encode(buf.getvalue()).decode("ascii"), image.width, image.height


def _script_json(value) -> str:
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _when(mtime_ns: int) -> str:
    return format_time(mtime_ns).replace("T", " ").replace("Z", " UTC")


def _file_uri(path: str) -> str:
    # A link that opens the file: absolute (the report may be opened from
    # elsewhere), every byte that is not plain ASCII percent-encoded.
    try:
        return Path(os.path.abspath(path)).as_uri()
    except ValueError:
        return ""


def _data(result: ScanResult, page_size: int) -> tuple[dict, list[str]]:
    index: dict[str, int] = {}
    groups = []
    since = result.settings.new_since is not None
    for g in result.groups:
        members = []
        for m in g.members:
            i = index.setdefault(m.path, len(index))
            member = {
                "p": display_text(m.path), "u": _file_uri(m.path), "k": int(m.keep), "d": m.distance,
                "t": display_text(m.transform), "w": m.width, "h": m.height, "b": m.size,
                "m": _when(m.mtime_ns), "i": i,
            }
            if m.box is not None:  # --partial: drawn on the picture it is in
                member["x"] = list(m.box)
            if m.new:  # --new-since
                member["n"] = 1
            # The member's CSV row either side of its keep field, as the
            # bytes the CSV report holds (a name that is not UTF-8 included):
            # the page's "Save decisions" writes them back around the choice.
            row = csv_row(g, m, since=since)
            member["c"] = [_b64(csv_text(row[:2])), _b64(csv_text(row[3:]))]
            members.append(member)
        groups.append({"id": g.id, "d": g.max_distance, "m": members})
    data = {"page_size": page_size, "groups": groups, "header": ",".join(CSV_COLUMNS)}
    if any(not os.path.isabs(p) for p in index):  # the saved decisions hold them as the CSV does
        data["cwd"] = display_text(os.getcwd())
    return data, list(index)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def _thumbs(paths: list[str], size: int) -> Iterator[dict]:
    # One at a time, written as made, so memory stays flat. Threads did not
    # help (measured: 11.7 ms per 12-megapixel JPEG alone, 11.6 ms with two).
    for path in paths:
        outcome = thumbnail(path, size=size)
        if isinstance(outcome, ScanError):
            yield {"e": display_text(outcome.message)}
        else:
            yield {"u": outcome[0], "w": outcome[1], "h": outcome[2]}


def _e(value) -> str:
    """Text for HTML: escaped, with bytes that are not UTF-8 shown as ``\\xNN``.

    >>> _e('<img src=x onerror="1">')
    '&lt;img src=x onerror=&quot;1&quot;&gt;'
    """
    return html.escape(display_text(str(value)), quote=True)


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def render_html(result: ScanResult, out: TextIO, *, thumb_size: int = 160, page_size: int = 200) -> None:
    """Write the review page: a summary, then one card per group, ``page_size`` groups a page.

    Each card shows every member's thumbnail with its path, size in pixels
    and bytes, date, distance and transform; the kept file is marked.
    A file that cannot be read any more shows a box with the reason.
    """
    if page_size < 1 or thumb_size < 1:
        msg = f"page_size and thumb_size must be 1 or more, not {page_size} and {thumb_size}"
        raise UsageError(msg)
    style = _STYLE.replace("THUMB", str(thumb_size))
    csp = (
        f"default-src 'none'; img-src data:; style-src {_csp_hash(style)}; "
        f"script-src {_csp_hash(_SCRIPT)}; base-uri 'none'; form-action 'none'"
    )
    counts = result.counts
    freeable = sum(m.size for g in result.groups for m in g.members if not m.keep)
    s = result.settings
    summary = [
        ("found", "Files found", counts.get("found", len(result.files) + len(result.errors))),
        ("hashed", "Images compared", counts.get("hashed", len(result.files))),
        ("groups", "Groups", counts.get("groups", len(result.groups))),
        ("duplicates", "Duplicates (not kept)", counts.get("duplicates", result.duplicate_count)),
        ("freeable", "Space that could be freed", human_size(freeable)),
        ("errors", "Unreadable files", counts.get("errors", len(result.errors))),
    ]
    w = out.write
    w('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n')
    w(f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n')  # our text: no quotes to escape
    w('<meta name="referrer" content="no-referrer">\n')
    w('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
    w(f"<title>dupfinder: {_e(len(result.groups))} group{'' if len(result.groups) == 1 else 's'} "
      "of near-duplicate images</title>\n")
    w(f"<style>{style}</style>\n</head>\n<body>\n<header>\n<h1>Near-duplicate images</h1>\n")
    w('<dl class="summary">\n')
    for key, label, value in summary:
        w(f'<div><dt>{_e(label)}</dt><dd id="count-{key}">{_e(value)}</dd></div>\n')
    w("</dl>\n")
    w(f'<p class="settings">{_e(s.algorithm)}, {_e(256 if s.algorithm == "pdq" else s.hash_size * s.hash_size)}-bit hashes, '
      f"threshold {_e(s.threshold)} bits; scanned: {_e(', '.join(s.roots))}</p>\n")
    if result.errors:
        w(f'<details class="errors"><summary>Files that could not be read ({_e(len(result.errors))})'
          "</summary>\n<ul>\n")
        for err in result.errors:
            w(f'<li><span class="path">{_e(err.path)}</span> ({_e(err.stage)}): {_e(err.message)}</li>\n')
        w("</ul>\n</details>\n")
    w("</header>\n")
    w('<nav class="pager" aria-label="pages" hidden></nav>\n<main id="groups">'
      "<noscript>This report shows its groups with JavaScript; please allow it for this file."
      "</noscript></main>\n")
    w('<nav class="pager" aria-label="pages" hidden></nav>\n')
    data, paths = _data(result, page_size)
    w('<script type="application/json" id="dupfinder-data">')
    w(_script_json(data)[:-1] + ',"thumbs":[')
    for i, thumb in enumerate(_thumbs(paths, thumb_size)):
        w(("," if i else "") + _script_json(thumb))
    w("]}</script>\n")
    w(f"<script>{_SCRIPT}</script>\n</body>\n</html>\n")


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5rem 2rem;color:#222;background:#f6f6f4}
h1{font-size:1.4rem;margin:1rem 0 .5rem}
.summary{display:flex;flex-wrap:wrap;gap:.5rem 2rem;margin:0}
.summary div{min-width:9rem}.summary dt{color:#666;font-size:.8rem}
.summary dd{margin:0;font-size:1.3rem;font-weight:600}
.settings{color:#555}.errors{margin:.5rem 0}.errors li{overflow-wrap:anywhere}
.pager{display:flex;gap:.5rem;align-items:center;margin:1rem 0}
.pager[hidden]{display:none}.pager input{width:5rem}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0 0 1rem;padding:.5rem 1rem}
.card h2{font-size:1rem;margin:.25rem 0 .5rem}
.row{display:flex;flex-wrap:wrap;gap:1rem}
.member{margin:0;width:THUMBpx;padding:4px;border:3px solid transparent;border-radius:6px}
.member.keep{border-color:#2a8a3a;background:#eef8ef}
.member img,.thumb{display:block;max-width:THUMBpx;max-height:THUMBpx}
.thumb.missing{width:THUMBpx;height:THUMBpx;box-sizing:border-box;padding:.5rem;background:#eee;
color:#a33;font-size:.8rem;overflow:auto;overflow-wrap:anywhere;border:1px dashed #aaa}
figcaption{font-size:.8rem;margin-top:.25rem}
.badge{display:inline-block;font-size:.7rem;padding:0 .4rem;border-radius:3px;background:#ddd}
.keep .badge{background:#2a8a3a;color:#fff}
.path{font-family:ui-monospace,monospace;overflow-wrap:anywhere;margin:.15rem 0}
.meta{color:#555}.new{background:#1f5fbf;color:#fff;margin-left:.3rem}
.frame{position:relative;display:inline-block;line-height:0}
.choice{display:block;margin-top:.2rem}.tools{display:flex;gap:1rem;align-items:center}
.decisions{color:#a55a00}
.box{position:absolute;box-sizing:border-box;border:2px solid #f0a000;outline:1px solid #0008;
pointer-events:none}
.box span{position:absolute;top:0;left:0;font:600 10px/1.3 system-ui,sans-serif;background:#f0a000;
color:#000;padding:0 2px}
"""

_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dupfinder-data").textContent);
  var groups = data.groups, thumbs = data.thumbs, size = data.page_size;
  // The reviewer's choices, kept across pages: which files to keep.
  var decided = groups.map(function (g) { return g.m.map(function (m) { return !!m.k; }); });
  var pages = Math.max(1, Math.ceil(groups.length / size));
  var main = document.getElementById("groups");
  var pagers = Array.prototype.slice.call(document.querySelectorAll(".pager"));
  var units = ["B", "kB", "MB", "GB", "TB", "PB"];
  function human(n) {
    var v = n, i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return i ? v.toFixed(1) + " " + units[i] : n + " B";
  }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function member(m, gi, mi) {
    var fig = el("figure", m.k ? "member keep" : "member"), t = thumbs[m.i], img, frame = null;
    if (t && t.u) {
      frame = el("div", "frame");
      img = el("img");
      img.width = t.w; img.height = t.h; img.alt = m.p; img.decoding = "async";
      img.src = "data:image/jpeg;base64," + t.u;
      frame.appendChild(img);
      fig.appendChild(frame);
    } else {
      fig.appendChild(el("div", "thumb missing", "No preview: " + (t ? t.e : "")));
    }
    var cap = el("figcaption"), badge = el("span", "badge");
    cap.appendChild(badge);
    if (m.n) { cap.appendChild(el("span", "badge new", "new")); }
    var where = el("div", "path");
    if (m.u) {
      var link = el("a", null, m.p);
      // A new tab: leaving and coming back would rebuild the page's choices.
      link.href = m.u; link.rel = "noopener noreferrer"; link.target = "_blank";
      where.appendChild(link);
    } else {
      where.textContent = m.p;
    }
    cap.appendChild(where);
    cap.appendChild(el("div", "meta", m.w + " \\u00d7 " + m.h + " px, " + human(m.b)));
    cap.appendChild(el("div", "meta", m.m));
    cap.appendChild(el("div", "meta", m.k ? "the scan's choice to keep" :
      "distance " + m.d + " bits" + (m.t ? ", " + m.t : "") + " from the scan's choice"));
    if (m.x) {
      cap.appendChild(el("div", "meta", (m.t.indexOf("contained") === 0 ? "holds the kept picture at " :
        "shows the part of the kept picture at ") + m.x[0] + "," + m.x[1] + "\\u2013" + m.x[2] + "," + m.x[3]));
    }
    var choice = el("label", "choice"), box = el("input");
    // The choices live in `decided`: a browser that restored form fields
    // after Back would show boxes the saved file does not follow.
    box.type = "checkbox"; box.autocomplete = "off"; box.checked = decided[gi][mi];
    box.setAttribute("aria-label", "keep " + m.p);
    function show() {
      fig.className = decided[gi][mi] ? "member keep" : "member";
      badge.textContent = decided[gi][mi] ? "KEEP" : "duplicate";
    }
    box.addEventListener("change", function () { decided[gi][mi] = box.checked; show(); changed(); });
    show();
    choice.appendChild(box);
    choice.appendChild(document.createTextNode(" keep this file"));
    cap.appendChild(choice);
    fig.appendChild(cap);
    return {fig: fig, frame: frame};
  }
  // A partial copy's box, drawn on the picture it is in: a crop's on the
  // kept file (the part shown), a container's on itself (where the kept file is).
  function box(frame, x, w, h, label) {
    if (!frame || !w || !h) { return; }
    var b = el("div", "box");
    b.style.left = (100 * x[0] / w) + "%"; b.style.top = (100 * x[1] / h) + "%";
    b.style.width = (100 * (x[2] - x[0]) / w) + "%"; b.style.height = (100 * (x[3] - x[1]) / h) + "%";
    b.appendChild(el("span", null, label));
    frame.appendChild(b);
  }
  function card(g, gi) {
    var section = el("section", "card");
    section.id = "group-" + g.id;
    section.appendChild(el("h2", null, "Group " + g.id + ": " + g.m.length +
      " files, largest distance " + g.d + " bits"));
    var row = el("div", "row"), kept;
    var shown = g.m.map(function (m, mi) { return member(m, gi, mi); });
    kept = g.m[0].k ? shown[0] : null;
    g.m.forEach(function (m, i) {
      if (!m.x) { return; }
      if (m.t.indexOf("contained") === 0) { box(shown[i].frame, m.x, m.w, m.h, "kept file"); }
      else if (kept) { box(kept.frame, m.x, g.m[0].w, g.m[0].h, String(i + 1)); }
    });
    shown.forEach(function (s, i) {
      var m = g.m[i];
      if (m.x && m.t.indexOf("contained") !== 0 && kept && kept.frame && !m.k) {
        s.fig.querySelector("figcaption").appendChild(el("div", "meta", "box " + (i + 1) + " on the kept file"));
      }
      row.appendChild(s.fig);
    });
    section.appendChild(row);
    return section;
  }
  function current() {
    var found = /^#page=(\\d+)$/.exec(location.hash);
    return Math.min(Math.max(found ? parseInt(found[1], 10) : 1, 1), pages);
  }
  function go(p) { location.hash = "#page=" + Math.min(Math.max(p, 1), pages); }
  function button(label, cls, target) {
    var b = el("button", cls, label);
    b.type = "button";
    b.addEventListener("click", function () { go(target()); });
    return b;
  }
  pagers.forEach(function (nav) {
    var input = el("input");
    input.type = "number"; input.min = 1; input.max = pages;
    input.setAttribute("aria-label", "page number");
    input.addEventListener("change", function () { go(parseInt(input.value, 10) || 1); });
    nav.appendChild(button("\\u00ab First", "first", function () { return 1; }));
    nav.appendChild(button("\\u2039 Previous", "prev", function () { return current() - 1; }));
    nav.appendChild(el("span", "where"));
    nav.appendChild(button("Next \\u203a", "next", function () { return current() + 1; }));
    nav.appendChild(button("Last \\u00bb", "last", function () { return pages; }));
    nav.appendChild(input);
    nav.hidden = pages < 2;
  });
  function render() {
    var p = current(), first = (p - 1) * size, frag = document.createDocumentFragment();
    groups.slice(first, first + size).forEach(function (g, k) { frag.appendChild(card(g, first + k)); });
    main.replaceChildren(frag);
    pagers.forEach(function (nav) {
      nav.querySelector(".where").textContent = "Page " + p + " of " + pages + " (groups " +
        (groups.length ? first + 1 : 0) + "\\u2013" + Math.min(first + size, groups.length) +
        " of " + groups.length + ")";
      nav.querySelector(".first").disabled = nav.querySelector(".prev").disabled = p === 1;
      nav.querySelector(".last").disabled = nav.querySelector(".next").disabled = p === pages;
      nav.querySelector("input").value = p;
    });
    window.scrollTo(0, 0);
  }
  // "Save decisions": the CSV report again, byte for byte but for the keep
  // column, ready for `dupfinder apply` (which skips a group left with no file kept).
  function bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i += 1) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  var status = el("span", "decisions"), unsaved = false;
  function changed() {
    // The counts follow the choices; a group left with no file kept is
    // skipped by apply, so it frees nothing.
    var n = 0, dups = 0, freed = 0;
    groups.forEach(function (g, gi) {
      var any = decided[gi].some(function (k) { return k; });
      g.m.forEach(function (m, mi) {
        if (decided[gi][mi] !== !!m.k) { n += 1; }
        if (any && !decided[gi][mi]) { dups += 1; freed += m.b; }
      });
    });
    document.getElementById("count-duplicates").textContent = dups;
    document.getElementById("count-freeable").textContent = human(freed);
    status.textContent = n ? n + " file" + (n === 1 ? "" : "s") + " changed from the scan's choice" : "";
    unsaved = true;
  }
  window.addEventListener("beforeunload", function (event) {
    if (unsaved) { event.preventDefault(); event.returnValue = ""; }
  });
  function save() {
    var parts = [data.header + "\\n"];
    groups.forEach(function (g, gi) {
      g.m.forEach(function (m, mi) {
        parts.push(bytes(m.c[0]), "," + (decided[gi][mi] ? "yes" : "no") + ",", bytes(m.c[1]), "\\n");
      });
    });
    var link = el("a");
    link.href = URL.createObjectURL(new Blob(parts, {type: "text/csv"}));
    link.download = "dupfinder-decisions.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    unsaved = false;
  }
  if (groups.length) {
    var tools = el("p", "tools"), saver = el("button", "save", "Save decisions (CSV for dupfinder apply)");
    saver.type = "button";
    saver.addEventListener("click", save);
    tools.appendChild(saver);
    if (data.cwd) {
      tools.appendChild(el("span", "meta", "paths are relative to " + data.cwd + ": run dupfinder apply there"));
    }
    tools.appendChild(status);
    document.querySelector("header").appendChild(tools);
  }
  window.addEventListener("hashchange", render);
  render();
}());
"""
