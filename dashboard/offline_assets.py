"""Install the JavaScript, CSS and fonts of Visdom's page from npm, so the server runs offline.

`python -m visdom.server` (visdom 0.2.4, see `visdom/server/build.py`) downloads its page's
libraries from unpkg, cdn.plot.ly, d3js.org and cdnjs at start and crashes without internet.
This script fetches the same libraries, at the same versions, as npm tarballs (`npm pack`, so
npm's registry and proxy settings apply), checks each tarball against a pinned sha512, unpacks it
under dashboard/node_modules/ and copies the files, under the names build.py gives them, into
the installed visdom's `static/` folder. It then writes `static/version.built`, the marker that
tells visdom the files are in place, so the server downloads nothing. Idempotent: a second run
fetches nothing and copies nothing.

usage: python dashboard/offline_assets.py [--check]
    --check   only report what is missing (exit 1 if anything is); no network
"""
import base64
import hashlib
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


GLYPHS = "fonts/glyphicons-halflings-regular"
# npm package: (version, sha512 of its tarball, [(file in package, destination under static/)]
# or a function from file in package to destination or None).
PACKAGES = {
    "jquery": ("3.1.1", "zuiWRmx65Kd1oFGdWLvAjbsumdOBFvs3r1vuqCyKFF79R7exBHNbiNEJ8LR+xkzgfxqBznMD/4Cv6PHXS6mvEw==",
               [("dist/jquery.min.js", "js/jquery.min.js")]),
    "bootstrap": ("3.3.7", "qcFaisBrcBhTFkz1IUnGDYnX6ZWfFzH8zOixUDtHW9Ip+r+7MfMFav2rzy7cIHc7rgIg7xjhWBoo1mS/U26j4g==",
                  [("dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
                   ("dist/css/bootstrap.min.css", "css/bootstrap.min.css")]
                  + [(f"dist/{GLYPHS}.{ext}", f"{GLYPHS}.{ext}") for ext in ("eot", "woff2", "woff", "ttf", "svg")]
                  # build.py keeps the URL fragment in the name; the browser asks for the .svg.
                  + [(f"dist/{GLYPHS}.svg", f"{GLYPHS}.svg#glyphicons_halflingsregular")]),
    "react": ("16.2.0", "ZmIomM7EE1DvPEnSFAHZn9Vs9zJl5A9H7el0EGTE6ZbW9FKe/14IYAlPbC8iH25YarEQxZL+E8VW7Mi7kfQrDQ==",
              [("umd/react.production.min.js", "js/react-react.min.js")]),
    "react-dom": ("16.2.0", "zpGAdwHVn9K0091d+hr+R0qrjoJ84cIBFL2uU60KvWBPfZ7LPSrfqviTxGHWN0sjPZb2hxWzMexwrvJdKePvjg==",
                  [("umd/react-dom.production.min.js", "js/react-dom.min.js")]),
    "react-modal": ("3.1.10", "7b77AGWCkdg0YOf/qcYIGCpuwbxRwOA8P3UrUovk4grUNv+idOmHovJAx/Dcd3fuwHtgixxVjpcjVG60985MSA==",
                    [("dist/react-modal.min.js", "js/react-modal.min.js")]),
    # cdn.plot.ly/plotly-2.11.1.min.js is published on npm as plotly.js-dist-min.
    "plotly.js-dist-min": ("2.11.1", "F9WWNht0D3yBLZGHbLoJNfvplXvy+GUPSsA/lCbMuYd/UwzSu6Vmyprxlps9Einw1LDS1hYBrJeioK0lE3ieXA==",
                           [("plotly.min.js", "js/plotly-plotly.min.js")]),
    "sjcl": ("1.0.7", "xQbiwKfiAj6vyk44ANJ5RRymALRdRZOuRoKNYkWUU404p/RFXmMaay1Z5vRn30GJjkD+psox4Jd38jZojSuNYA==",
             [("sjcl.js", "js/sjcl.js")]),
    "layout-bin-packer": ("1.4.0", "dQOZnajbOBGIcS9YlzKrkRtMCGa2oEpyf1zGRn93suphSvPclJe54Sbgtb053GJ21DUk84IBzaeQvjn+Gb10fA==",
                          [("dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
                           ("dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map")]),
    # d3js.org/d3.v3.min.js and d3-selection-multi.v1.js serve the last 3.x and 1.x releases.
    "d3": ("3.5.17", "yFk/2idb8OHPKkbAL8QaOaqENNoMhIaSHZerk3oQsECwkObkCpJyjYwCe+OHiq6UEdhe1m8ZGARRRO3ljFjlKg==",
           [("d3.min.js", "js/d3.v3.min.js")]),
    "d3-selection-multi": ("1.0.1", "mEnRkJ6A+Otd1LuRPV3az+s/RLDmIEhuz/MnT21O2nPcWNH7wZotdIlRjMA4Wpr+n7AESQ5fD8v1J3nL2Mnw9g==",
                           [("build/d3-selection-multi.js", "js/d3-selection-multi.v1.js")]),
    "save-svg-as-png": ("1.4.17", "7QDaqJsVhdFPwviCxkgHiGm9omeaMBe1VKbHySWU6oFB2LtnGCcYS13eVoslUgq6VZC6Tjq/HddBd1K6p2PGpA==",
                        [("lib/saveSvgAsPng.js", "js/saveSvgAsPng.js")]),
    "react-resizable": ("1.4.6", "4zLORO51u0/mlDsrVCAA4p266d+3mb2ZMNdiWOotAh/PdnfrRzZhgePmKE08PSQatXVIfMjmyD+Sapay8tmxdQ==",
                        [("css/styles.css", "css/react-resizable-styles.css")]),
    "react-grid-layout": ("0.16.3", "ytP92EqUjqcFhGzvdeKrK610dQ04GdFwRCWtD6PoeL5wR3liETcFISO7k8RBqnosV86JtXf/DwIfrL0COLs0gg==",
                          [("css/styles.css", "css/react-grid-layout-styles.css")]),
    # unpkg.com/classnames@2.2.5 answers with the package's main file; build.py files it under fonts/.
    "classnames": ("2.2.5", "DTt3GhOUDKhh4ONwIJW4lmhyotQmV2LjNlGK/J2hkwUcqcbKkCLAdJPtxQnxnlc7SR3f1CEXCyMmc7WLUsWbNA==",
                   [("index.js", "fonts/classnames")]),
    "mathjax": ("2.7.5", "OzsJNitEHAJB3y4IIlPCAvS0yoXwYjlo2Y4kmm9KQzyIBZt2d8yKRalby3uTRNN4fZQiGL2iMXjpdP1u2Rq2DQ==",
                _mathjax),
}


def visdom_static() -> tuple[Path, str]:
    """The installed visdom's static folder and its version."""
    import visdom
    from visdom.utils.shared_utils import get_visdom_path
    return Path(get_visdom_path("static")), visdom.__version__


def is_unpacked(name: str) -> bool:
    """True when node_modules/<name> holds the pinned tarball's files."""
    marker = MODULES / name / ".integrity"
    return marker.is_file() and marker.read_text().strip() == f"sha512-{PACKAGES[name][1]}"


def fetch(name: str) -> None:
    """`npm pack` the pinned version, check its sha512, unpack it to node_modules/<name>."""
    version, integrity = PACKAGES[name][:2]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["npm", "pack", f"{name}@{version}", "--pack-destination", tmp, "--json",
               "--prefer-offline", "--ignore-scripts", "--silent"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
        except FileNotFoundError:
            raise SystemExit("error: npm not found; install Node.js and npm, then rerun dashboard/setup.sh")
        except subprocess.CalledProcessError as err:
            last = (err.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"error: could not fetch {name}@{version} from the npm registry "
                             f"({' '.join(cmd[:3])}): {last}")
        tarball = Path(tmp) / json.loads(out)[0]["filename"]
        data = tarball.read_bytes()
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != integrity:
        raise SystemExit(f"error: {name}@{version} from npm has sha512-{got}, expected sha512-{integrity}")
    target = MODULES / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        # npm tarballs put everything under one top folder, usually "package/".
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[1] if "/" in member.name else ""
            if member.isfile() and inner:
                dest = target / inner
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
    (target / ".integrity").write_text(f"sha512-{integrity}\n")


def copies(name: str) -> list[tuple[Path, str]]:
    """(unpacked source file, destination under static/) for one package."""
    root, files = MODULES / name, PACKAGES[name][2]
    if callable(files):
        found = (p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file())
        files = [(src, dest) for src in found if (dest := files(src)) is not None]
    return [(root / src, dest) for src, dest in files]


def missing(static: Path, version: str) -> list[str]:
    """Destinations that are absent or differ from the pinned files; [] when all is in place."""
    out = [f"node_modules/{name} (not fetched)" for name in PACKAGES if not is_unpacked(name)]
    for name in PACKAGES:
        if is_unpacked(name):
            out += [dest for src, dest in copies(name) if not _same(src, static / dest)]
    marker = static / "version.built"
    if not marker.is_file() or marker.read_text().strip() != version:
        out.append("version.built")
    return out


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def install(log=print) -> None:
    """Fetch what is missing, copy what differs, then mark visdom's static folder as built."""
    static, version = visdom_static()
    if version != VISDOM_VERSION:
        raise SystemExit(f"error: visdom {version} is installed; this file list is for visdom "
                         f"{VISDOM_VERSION} (compare visdom/server/build.py and update PACKAGES)")
    for name in PACKAGES:
        if not is_unpacked(name):
            log(f"fetching {name}@{PACKAGES[name][0]} from the npm registry")
            fetch(name)
    copied = 0
    for name in PACKAGES:
        for src, dest in copies(name):
            if not _same(src, static / dest):
                (static / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, static / dest)
                copied += 1
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
        print("usage: python dashboard/offline_assets.py [--check]", file=sys.stderr)
        return 2
    install()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
