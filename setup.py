"""Build: the package is pure Python; the data plane is also compiled with mypyc
when it can be (a C compiler and mypy at build time), which cuts the Python work
per request by about a third (bench/RESULTS.md, "Compiled build").

    pip install .                                   # compiled if it can be, else pure with a warning
    EDGE_ROUTER_NO_EXTENSIONS=1 pip install .       # pure Python, on purpose
    EDGE_ROUTER_REQUIRE_EXTENSIONS=1 pip install .  # compiled, or the install fails
    pip install -e .                                # editable: always pure Python

An editable install never compiles: compiled modules in the source tree would
shadow the .py files being edited. Each build writes router/_compiled.json (the
sha256 of every compiled module's source) beside the extensions, and
router/buildinfo.py refuses to import a package whose extensions were built from
other sources than the .py files beside them (a stale in-place build).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent

# The modules every request runs through, compiled as one mypyc group.
# router/buildinfo.py reads the manifest a build writes, not this list.
# A compiled class cannot be subclassed by interpreted code: extend these by
# hooks or composition (UpstreamPool's opener, RegionStore's probe_results).
COMPILED = (
    "router/listener.py",
    "router/exchange.py",
    "router/upstream.py",
    "router/proxy.py",
    "router/body.py",
    "router/http1.py",
    "router/breaker.py",
    "router/retry.py",
    "router/metrics.py",
    "router/ewma.py",
    "router/client_ip.py",
    "router/state.py",
    "router/pool.py",
    "router/candidates.py",
    "router/degrade.py",
)
MANIFEST = "router/_compiled.json"


def mypy_config() -> str:
    """What mypyc needs (not a lint setting): only the compiled modules are
    analysed and must type-check; what they import from elsewhere is Any.
    Attribute access on an Optional (`self.req.url` where req may be None) compiles to a checked
    generic access, as in Python: an AttributeError if it is None."""
    compiled = ",".join(p[:-3].replace("/", ".") for p in COMPILED)
    # no_site_packages and follow_imports = skip: what the compiled modules
    # import from elsewhere (aiohttp, redis, config.py's validator tables, whose
    # dict literals of overloaded callables take mypy minutes) is Any to them.
    return ("[mypy]\nignore_missing_imports = True\nno_site_packages = True\nfollow_imports = skip\n"
            "ignore_errors = True\n"
            f"[mypy-{compiled}]\nignore_errors = False\ndisable_error_code = union-attr\n")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _warn(message: str) -> None:
    line = "*" * 78
    print(f"\n{line}\nedge-router: {message}\n{line}\n", file=sys.stderr, flush=True)


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class BinaryDistribution(Distribution):
    """The wheel is platform-specific even though its extensions are only
    known when build_ext runs (mypyc analyses the sources then, not every time
    setup.py is loaded for metadata)."""

    def has_ext_modules(self) -> bool:
        return not _flag("EDGE_ROUTER_NO_EXTENSIONS")


class build_mypyc(build_ext):
    """build_ext that compiles COMPILED with mypyc, or falls back to pure Python.

    mypyc runs when build_ext runs, so never for metadata nor for an editable install."""

    def finalize_options(self) -> None:
        self._require = _flag("EDGE_ROUTER_REQUIRE_EXTENSIONS")
        if self._require and _flag("EDGE_ROUTER_NO_EXTENSIONS"):
            raise SystemExit("edge-router: EDGE_ROUTER_NO_EXTENSIONS=1 and EDGE_ROUTER_REQUIRE_EXTENSIONS=1 "
                             "contradict each other")
        build_ext.finalize_options(self)

    def run(self) -> None:
        # mypyc runs here, not in finalize_options: egg_info finalizes build_ext
        # for every build, editable ones included, before setuptools marks an
        # editable build as such (editable_mode is only set later). An explicit
        # `setup.py build_ext --inplace` still compiles into the tree.
        if getattr(self, "editable_mode", False):
            print("edge-router: editable install: pure Python (compiled modules would shadow "
                  "the sources; see README, 'Compiled or pure build')", file=sys.stderr)
            return
        if _flag("EDGE_ROUTER_NO_EXTENSIONS"):
            _warn("EDGE_ROUTER_NO_EXTENSIONS=1: installing pure Python (slower data plane)")
            return
        try:
            self.distribution.ext_modules = self._mypycify()
        except (Exception, SystemExit) as exc:  # mypy's type errors end in SystemExit
            self._give_up(exc)
            return
        self._adopt(self.distribution.ext_modules)
        try:
            build_ext.run(self)
            self._write_manifest()
        except (Exception, SystemExit) as exc:  # gcc, or no compiler at all
            self._undo()
            self._give_up(exc)

    def _adopt(self, extensions: list) -> None:
        """What setuptools' finalize_options does for each extension (it cannot
        run twice): mypyc's extensions only exist now."""
        self.extensions = extensions
        self.check_extensions_list(extensions)
        for ext in extensions:
            ext._full_name = self.get_ext_fullname(ext.name)
            self.ext_map[ext._full_name] = self.ext_map[ext._full_name.split(".")[-1]] = ext
            ext._links_to_dynamic = ext._needs_stub = False  # plain extensions, no shared Library
            ext._file_name = self.get_ext_filename(ext._full_name)

    def _give_up(self, exc: BaseException) -> None:
        if self._require:
            raise SystemExit(f"edge-router: EDGE_ROUTER_REQUIRE_EXTENSIONS=1 and the compiled build "
                             f"failed: {exc}") from exc
        self.distribution.ext_modules = []
        _warn(f"the compiled build failed ({type(exc).__name__}: {exc}); installing pure Python "
              f"(slower data plane). Set EDGE_ROUTER_REQUIRE_EXTENSIONS=1 to make this fatal.")

    def _mypycify(self) -> list:
        from mypyc.build import mypycify  # comes with mypy (a build requirement)

        target = ROOT / "build" / "mypyc"
        target.mkdir(parents=True, exist_ok=True)
        (target / "mypy.ini").write_text(mypy_config())
        cwd = os.getcwd()
        os.chdir(ROOT)  # mypyc takes paths and writes its C files relative to the project
        try:
            return mypycify(["--config-file", str(target / "mypy.ini"), *COMPILED], opt_level="3",
                            debug_level="0", target_dir=str(target))
        finally:
            os.chdir(cwd)

    def _targets(self) -> list[Path]:
        return [Path(self.build_lib) / MANIFEST, *(Path(self.get_ext_fullpath(e.name)) for e in self.extensions)]

    def _write_manifest(self) -> None:
        digests = {Path(p).stem: source_digest(ROOT / p) for p in COMPILED}
        for target in self._targets()[:1] + ([ROOT / MANIFEST] if self.inplace else []):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps({"modules": digests}, indent=1, sort_keys=True) + "\n")

    def _undo(self) -> None:
        """Nothing half-built may be installed: the pure build must be whole."""
        for path in self._targets():
            path.unlink(missing_ok=True)
        self.extensions = []

    def get_outputs(self) -> list[str]:
        out = build_ext.get_outputs(self)
        if self.extensions:
            out.append(str(Path(self.build_lib) / MANIFEST))
        return out


setup(distclass=BinaryDistribution, cmdclass={"build_ext": build_mypyc})
