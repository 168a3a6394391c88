"""Install the JavaScript, CSS and fonts of Visdom's page from npm, so the server runs offline.

`python -m visdom.server` (visdom 0.2.4, see `visdom/server/build.py`) downloads its page's
libraries from unpkg, cdn.plot.ly, d3js.org and cdnjs at start and crashes without internet.
This script fetches the same libraries, at the same versions, as npm tarballs (`npm pack`, so
npm's registry and proxy settings apply), checks each tarball against a pinned sha512, unpacks it
under dashboard/node_modules/ and copies the files, under the names build.py gives them, into
the installed visdom's `static/` folder. It then writes `static/version.built`, the marker that
tells visdom the files are in place, so the server downloads nothing. Idempotent: a second run
fetches nothing and copies nothing.

It also fixes one line of visdom's index.html: tornado >= 6.6 refuses to version-hash
`static_url("../user/style.css")` (a file outside static/) and answers the whole page with 403;
that URL is now written without its version hash, which is what older tornado fell back to.

usage: python dashboard/offline_assets.py [--check]
    --check   only report what is missing (exit 1 if anything is); no network
"""
import base64
import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VISDOM_VERSION = "0.2.4"  # the table below follows this version's build.py
MODULES = Path(__file__).resolve().parent / "node_modules"


def _mathjax(path: str):
    """MathJax 2.7.5 without its sources, tests and non-TeX fonts: what the page can load."""
    parts = path.split("/")
    if parts[0] in ("unpacked", "test", "docs") or (len(parts) == 1 and path != "MathJax.js"):
        return None
    if parts[0] == "fonts" and parts[2:3] != ["TeX"]:
        return None
    if parts[:2] == ["jax", "output"] and parts[3:4] == ["fonts"] and parts[4:5] != ["TeX"]:
        return None
    return f"js/mathjax/2.7.5/{path}"


# The index.html line that tornado >= 6.6 rejects, and the same URL without a version hash.
USER_CSS = ('{{ static_url("../user/style.css") }}',
            '{{ static_url("../user/style.css", include_version=False) }}')
GLYPHS = "fonts/glyphicons-halflings-regular"
# npm package@version: [(file in the package, destination under static/)], or a function from a file
# in the package to its destination (None: not needed).
FILES = {
    "jquery@3.1.1": [("dist/jquery.min.js", "js/jquery.min.js")],
    "bootstrap@3.3.7": [("dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
                        ("dist/css/bootstrap.min.css", "css/bootstrap.min.css")]
                       + [(f"dist/{GLYPHS}.{ext}", f"{GLYPHS}.{ext}") for ext in ("eot", "woff2", "woff", "ttf", "svg")]
                       # build.py keeps the URL fragment in the name; the browser asks for the .svg.
                       + [(f"dist/{GLYPHS}.svg", f"{GLYPHS}.svg#glyphicons_halflingsregular")],
    "react@16.2.0": [("umd/react.production.min.js", "js/react-react.min.js")],
    "react-dom@16.2.0": [("umd/react-dom.production.min.js", "js/react-dom.min.js")],
    "react-modal@3.1.10": [("dist/react-modal.min.js", "js/react-modal.min.js")],
    # cdn.plot.ly/plotly-2.11.1.min.js is published on npm as plotly.js-dist-min.
    "plotly.js-dist-min@2.11.1": [("plotly.min.js", "js/plotly-plotly.min.js")],
    "sjcl@1.0.7": [("sjcl.js", "js/sjcl.js")],
    "layout-bin-packer@1.4.0": [("dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
                                ("dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map")],
    # d3js.org/d3.v3.min.js and d3-selection-multi.v1.js serve the last 3.x and 1.x releases.
    "d3@3.5.17": [("d3.min.js", "js/d3.v3.min.js")],
    "d3-selection-multi@1.0.1": [("build/d3-selection-multi.js", "js/d3-selection-multi.v1.js")],
    "save-svg-as-png@1.4.17": [("lib/saveSvgAsPng.js", "js/saveSvgAsPng.js")],
    "react-resizable@1.4.6": [("css/styles.css", "css/react-resizable-styles.css")],
    "react-grid-layout@0.16.3": [("css/styles.css", "css/react-grid-layout-styles.css")],
    # unpkg.com/classnames@2.2.5 answers with the package's main file; build.py files it under fonts/.
    "classnames@2.2.5": [("index.js", "fonts/classnames")],
    "mathjax@2.7.5": _mathjax,
}
# sha512 of each npm tarball, as in the "integrity" field of a package-lock.json.
INTEGRITY = {
    "jquery@3.1.1":
        "sha512-zuiWRmx65Kd1oFGdWLvAjbsumdOBFvs3r1vuqCyKFF79R7exBHNbiNEJ8LR+xkzgfxqBznMD/4Cv6PHXS6mvEw==",
    "bootstrap@3.3.7":
        "sha512-qcFaisBrcBhTFkz1IUnGDYnX6ZWfFzH8zOixUDtHW9Ip+r+7MfMFav2rzy7cIHc7rgIg7xjhWBoo1mS/U26j4g==",
    "react@16.2.0":
        "sha512-ZmIomM7EE1DvPEnSFAHZn9Vs9zJl5A9H7el0EGTE6ZbW9FKe/14IYAlPbC8iH25YarEQxZL+E8VW7Mi7kfQrDQ==",
    "react-dom@16.2.0":
        "sha512-zpGAdwHVn9K0091d+hr+R0qrjoJ84cIBFL2uU60KvWBPfZ7LPSrfqviTxGHWN0sjPZb2hxWzMexwrvJdKePvjg==",
    "react-modal@3.1.10":
        "sha512-7b77AGWCkdg0YOf/qcYIGCpuwbxRwOA8P3UrUovk4grUNv+idOmHovJAx/Dcd3fuwHtgixxVjpcjVG60985MSA==",
    "plotly.js-dist-min@2.11.1":
        "sha512-F9WWNht0D3yBLZGHbLoJNfvplXvy+GUPSsA/lCbMuYd/UwzSu6Vmyprxlps9Einw1LDS1hYBrJeioK0lE3ieXA==",
    "sjcl@1.0.7":
        "sha512-xQbiwKfiAj6vyk44ANJ5RRymALRdRZOuRoKNYkWUU404p/RFXmMaay1Z5vRn30GJjkD+psox4Jd38jZojSuNYA==",
    "layout-bin-packer@1.4.0":
        "sha512-dQOZnajbOBGIcS9YlzKrkRtMCGa2oEpyf1zGRn93suphSvPclJe54Sbgtb053GJ21DUk84IBzaeQvjn+Gb10fA==",
    "d3@3.5.17":
        "sha512-yFk/2idb8OHPKkbAL8QaOaqENNoMhIaSHZerk3oQsECwkObkCpJyjYwCe+OHiq6UEdhe1m8ZGARRRO3ljFjlKg==",
    "d3-selection-multi@1.0.1":
        "sha512-mEnRkJ6A+Otd1LuRPV3az+s/RLDmIEhuz/MnT21O2nPcWNH7wZotdIlRjMA4Wpr+n7AESQ5fD8v1J3nL2Mnw9g==",
    "save-svg-as-png@1.4.17":
        "sha512-7QDaqJsVhdFPwviCxkgHiGm9omeaMBe1VKbHySWU6oFB2LtnGCcYS13eVoslUgq6VZC6Tjq/HddBd1K6p2PGpA==",
    "react-resizable@1.4.6":
        "sha512-4zLORO51u0/mlDsrVCAA4p266d+3mb2ZMNdiWOotAh/PdnfrRzZhgePmKE08PSQatXVIfMjmyD+Sapay8tmxdQ==",
    "react-grid-layout@0.16.3":
        "sha512-ytP92EqUjqcFhGzvdeKrK610dQ04GdFwRCWtD6PoeL5wR3liETcFISO7k8RBqnosV86JtXf/DwIfrL0COLs0gg==",
    "classnames@2.2.5":
        "sha512-DTt3GhOUDKhh4ONwIJW4lmhyotQmV2LjNlGK/J2hkwUcqcbKkCLAdJPtxQnxnlc7SR3f1CEXCyMmc7WLUsWbNA==",
    "mathjax@2.7.5":
        "sha512-OzsJNitEHAJB3y4IIlPCAvS0yoXwYjlo2Y4kmm9KQzyIBZt2d8yKRalby3uTRNN4fZQiGL2iMXjpdP1u2Rq2DQ==",
}


def visdom_static() -> tuple[Path, str]:
    """The installed visdom's static folder and its version, found without importing visdom (slow)."""
    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise SystemExit(f"error: visdom is not installed for {sys.executable}")
    package = Path(spec.origin).parent
    version = package / "VERSION"  # what visdom.__version__ reads
    return package / "static", version.read_text().strip() if version.is_file() else "no_version_file"


def folder(spec: str) -> Path:
    """Where a package is unpacked: node_modules/<name>, as npm would put it."""
    return MODULES / spec.rsplit("@", 1)[0]


def is_unpacked(spec: str) -> bool:
    """True when node_modules/<name> holds the files of the pinned tarball."""
    marker = folder(spec) / ".integrity"
    return marker.is_file() and marker.read_text().strip() == INTEGRITY[spec]


def fetch(spec: str) -> None:
    """`npm pack` a pinned package, check its sha512, unpack it to node_modules/<name>."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["npm", "pack", spec, "--pack-destination", tmp, "--json", "--prefer-offline",
               "--ignore-scripts", "--silent"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
        except FileNotFoundError:
            raise SystemExit("error: npm not found; install Node.js and npm, then rerun dashboard/setup.sh")
        except subprocess.CalledProcessError as err:
            last = (err.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"error: could not fetch {spec} from the npm registry (npm pack): {last}")
        data = (Path(tmp) / json.loads(out)[0]["filename"]).read_bytes()
    got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != INTEGRITY[spec]:
        raise SystemExit(f"error: {spec} from npm has {got}, expected {INTEGRITY[spec]}")
    target = folder(spec)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():  # all under one top folder, usually "package/"
            inner = member.name.split("/", 1)[1] if "/" in member.name else ""
            if member.isfile() and inner and ".." not in inner.split("/"):
                (target / inner).parent.mkdir(parents=True, exist_ok=True)
                (target / inner).write_bytes(tar.extractfile(member).read())
    (target / ".integrity").write_text(got + "\n")


def copies(spec: str) -> list[tuple[Path, str]]:
    """(unpacked file, destination under static/) for one package."""
    root, files = folder(spec), FILES[spec]
    if callable(files):
        found = (p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file())
        files = [(src, dest) for src in found if (dest := files(src)) is not None]
    return [(root / src, dest) for src, dest in files]


def missing(static: Path, version: str) -> list[str]:
    """What is not in place yet: [] when visdom can serve its page offline."""
    out = [f"{spec} (not fetched)" for spec in FILES if not is_unpacked(spec)]
    for spec in FILES:
        if is_unpacked(spec):
            out += [dest for src, dest in copies(spec) if not _same(src, static / dest)]
    if USER_CSS[0] in (static / "index.html").read_text():
        out.append("index.html (user style.css line)")
    marker = static / "version.built"
    if not marker.is_file() or marker.read_text().strip() != version:
        out.append("version.built")
    return out


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def install(log=print) -> None:
    """Fetch what is missing, copy what differs, fix index.html, mark visdom's static folder built."""
    static, version = visdom_static()
    if version != VISDOM_VERSION:
        raise SystemExit(f"error: visdom {version} is installed; this file list is for visdom "
                         f"{VISDOM_VERSION} (compare visdom/server/build.py, then update FILES)")
    for spec in FILES:
        if not is_unpacked(spec):
            log(f"fetching {spec} from the npm registry")
            fetch(spec)
    copied = 0
    for spec in FILES:
        for src, dest in copies(spec):
            if not _same(src, static / dest):
                (static / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, static / dest)
                copied += 1
    index = static / "index.html"
    if USER_CSS[0] in index.read_text():
        index.write_text(index.read_text().replace(*USER_CSS))
    (static / "version.built").write_text(version)
    log(f"visdom static files in place ({copied} copied) in {static}")


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        gaps = missing(*visdom_static())
        for gap in gaps[:20]:
            print(f"missing: {gap}")
        if len(gaps) > 20:
            print(f"... and {len(gaps) - 20} more")
        return 1 if gaps else 0
    if argv:
        print(f"error: unknown arguments {' '.join(map(ascii, argv))}: use none (install) or only --check "
              "(usage: python dashboard/offline_assets.py [--check])", file=sys.stderr)
        return 2
    install()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
