"""PNG figures: kaleido (1.x) draws plotly figures in a headless Chrome or Chromium, which it drives through
choreographer. gpufleet finds the browser itself and hands kaleido its path, looking in this order:

1. ``BROWSER_PATH``, choreographer's own variable (when set, it must name an executable file);
2. Debian's Chromium, ``/usr/bin/chromium`` (scripts/install-chromium.sh installs it; the browser tests use it);
3. ``chromium``, ``chromium-browser``, ``google-chrome-stable``, ``google-chrome`` or ``chrome`` on ``PATH``.

Nothing is downloaded (kaleido's ``get_chrome`` is never called). plotly.js comes from the plotly package and
MathJax is off, so drawing needs no network. Several figures are drawn in one browser start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gpufleet.errors import InputError

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome", "chrome")
WIDTH_PX, HEIGHT_PX = 1200, 700
TIMEOUT_S = 120  # per figure; a first start of Chromium on a busy 2-core machine takes a few seconds


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_browser() -> Path | None:
    """The browser to draw with (the order above), or None; a ``BROWSER_PATH`` that names no executable is
    refused rather than passed over, since the user asked for it."""
    given = os.environ.get("BROWSER_PATH")
    if given:
        if not _executable(Path(given)):
            raise InputError(f"BROWSER_PATH is {given!r}, which is not an executable file; point it at Chrome or "
                             "Chromium, or unset it to use /usr/bin/chromium", field="plot")
        return Path(given)
    if _executable(DEBIAN_CHROMIUM):
        return DEBIAN_CHROMIUM
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def require(path: Path) -> Path:
    """The browser, once kaleido is known to be importable; else an error naming ``--plot`` and how to go on
    (checked before a sweep runs, so that a missing browser costs nothing)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise InputError(f"--plot {path}: a PNG needs the kaleido package (pip install 'gpufleet[sweeps]'); "
                         "or give a .html file", field="plot") from None
    browser = find_browser()
    if browser is None:
        raise InputError(f"--plot {path}: a PNG is drawn by Chrome or Chromium and none was found (BROWSER_PATH "
                         f"is not set, no {DEBIAN_CHROMIUM}, none of {', '.join(NAMES)} on PATH); install Debian's "
                         "chromium (scripts/install-chromium.sh) or set BROWSER_PATH, or give a .html file",
                         field="plot")
    return browser


def paths_for(path: Path, names: list[str]) -> list[Path]:
    """Where each figure goes: ``path`` itself for one figure; ``STEM.NAME.png`` beside it for several."""
    if len(names) == 1:
        return [path]
    return [path.with_name(f"{path.stem}.{name}{path.suffix}") for name in names]


def write(figures: dict, path: Path) -> list[Path]:
    """Each figure (name -> plotly figure) as a PNG of 1200 x 700 px at :func:`paths_for`; the files written."""
    import kaleido
    from kaleido.errors import (BrowserClosedError, BrowserFailedError, ChromeNotFoundError, JavascriptError,
                                KaleidoError)

    browser = require(path)
    targets = paths_for(path, list(figures))
    for target in targets:  # a file left from before must not pass for one drawn now
        target.unlink(missing_ok=True)
    specs = [{"fig": fig.to_dict(), "path": str(target),
              "opts": {"format": "png", "width": WIDTH_PX, "height": HEIGHT_PX, "scale": 1}}
             for fig, target in zip(figures.values(), targets)]
    errors: object = None
    for _attempt in range(2):  # kaleido reports a figure it failed to draw rather than raising: draw those again
        todo = [spec for spec in specs if not _drawn(Path(spec["path"]))]
        if not todo:
            return targets
        try:
            errors = kaleido.write_fig_from_object_sync(todo, kopts={"path": str(browser), "mathjax": False,
                                                                     "timeout": TIMEOUT_S})
        except (ChromeNotFoundError, BrowserFailedError, BrowserClosedError, KaleidoError, JavascriptError,
                TimeoutError) as exc:
            errors = f"{type(exc).__name__}: {exc}"
    missing = [spec["path"] for spec in specs if not _drawn(Path(spec["path"]))]
    if not missing:
        return targets
    raise InputError(f"--plot {path}: {browser} did not draw {', '.join(missing)} ({errors or 'no reason given'}); "
                     "give a .html file instead", field="plot")


def _drawn(target: Path) -> bool:
    return target.is_file() and target.stat().st_size > 0
