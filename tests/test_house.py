"""The house: the library apart from its applications, light commands without torch, lint-clean code, and
a wheel and an sdist that carry what they must (built and installed here, from this tree)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from vsrife import __version__

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, **kwargs)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of what a module of the package imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_the_library_never_imports_the_applications():
    library = [p for p in (ROOT / "vsrife").glob("*.py") if p.name != "__main__.py"]  # `python -m vsrife`
    assert library, "the library's modules"
    for path in library:
        assert not any(name.startswith("vsrife.apps") for name in imported_modules(path)), path.name


@pytest.mark.parametrize("argv", [["--help"], ["weights", "list"], ["samples", "list"], ["smooth", "--help"]])
def test_light_commands_do_not_import_torch(argv):
    code = (
        "import sys\nfrom vsrife.apps import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = run(PYTHON, "-c", code, *argv)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout or "model" in result.stdout or "present" in result.stdout


def test_import_vsrife_is_lazy_and_complete():
    code = (
        "import sys, vsrife\nassert 'torch' not in sys.modules\n"
        "for name in vsrife.__all__:\n    getattr(vsrife, name)\nassert 'torch' in sys.modules\n"
        "print(vsrife.rife.__module__, vsrife.DEFAULT_MODEL)"
    )
    result = run(PYTHON, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["vsrife.filter", "4.26"]


def test_code_is_lint_clean():
    ruff = Path(PYTHON).parent / "ruff"
    for args in (["check", "vsrife", "tests", "examples"], ["format", "--check", "vsrife", "tests", "examples"]):
        result = run(str(ruff), *args, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    result = run(PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(ROOT))
    assert result.returncode == 0, result.stderr
    return next(folder.glob("vsrife-*.whl"))


def test_wheel_carries_the_package_its_data_and_licence(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for member in ("vsrife/registry.json", "vsrife/py.typed", "vsrife/apps/cli.py", "vsrife/filter.py"):
        assert member in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "weights/")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "Requires-Dist: vapoursynth" in metadata
    # a plain `pip install vsrife` brings what `vsrife smooth` reads files with
    assert re.search(r"^Requires-Dist: vapoursynth-bestsource>=\d+$", metadata, re.MULTILINE), metadata


def test_installed_wheel_runs_rife_and_the_command_line(wheel, tmp_path):
    """Installed apart from this tree (its dependencies from the test environment): the registry is found
    under its one name, the console script and ``rife()`` run from the installed copy."""
    site = tmp_path / "site"
    result = run(PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel))
    assert result.returncode == 0, result.stderr
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    env |= {k: v for k, v in os.environ.items() if k == "VSRIFE_CACHE_DIR"}
    listing = run(PYTHON, str(site / "bin" / "vsrife"), "weights", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "4.26" in listing.stdout and "4.25/4.26 family" in listing.stdout
    code = (
        "import vapoursynth as vs, vsrife\n"
        f"assert vsrife.__file__.startswith({str(site)!r}), vsrife.__file__\n"
        "clip = vs.core.std.BlankClip(format=vs.RGBS, width=64, height=64, length=3)\n"
        "print(vsrife.rife(clip, model='4.6', device='cpu').num_frames)\n"
    )
    rendered = run(PYTHON, "-c", code, env=env, cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.strip() == "6"


def test_sdist_holds_what_the_tests_need(tmp_path):
    result = run(PYTHON, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    sdist = next(tmp_path.glob("vsrife-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        archive.extractall(tmp_path / "unpacked", filter="data")
    for member in ("LICENSE", "Makefile", "tests/conftest.py", "tests/helpers.py", "vsrife/registry.json"):
        assert member in names
    unpacked = next((tmp_path / "unpacked").iterdir())
    env = {"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    collected = run(PYTHON, "-m", "pytest", "--collect-only", "-q", "tests", cwd=unpacked, env=env)
    assert collected.returncode == 0, collected.stdout[-2000:]
    assert " tests collected" in collected.stdout or "tests collected" in collected.stdout


def documented_shell_lines() -> list[str]:
    """The lines of the ``sh`` code blocks of the README and docs/ (indented ones too)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    blocks = [b for page in pages for b in re.findall(r"^ *```sh\n(.*?)^ *```", page.read_text(), re.M | re.S)]
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_readme_installs_this_project_not_its_namesake_on_pypi(tmp_path):
    """`pip install vsrife` fetches HolyWu's vs-rife 5.7.0, another project under the same name: every install
    the README and docs/ give names a folder of this project (or other packages), and the README says how the two
    relate. The documented command, run from the folder above the clone, installs this project."""
    commands = [line.split("#")[0] for line in documented_shell_lines()]
    installs = [command.split("pip install", 1)[1].split() for command in commands if "pip install" in command]
    requirements = [word.strip("'\"") for words in installs for word in words if not word.startswith("-")]
    assert requirements, "the README gives no install command"
    assert not [r for r in requirements if re.fullmatch(r"vsrife(\[[\w,]+\])?([<>=!~].*)?", r)], requirements
    readme = (ROOT / "README.md").read_text()
    assert "HolyWu's vs-rife (5.7.0)" in readme and "drop-in" in readme
    documented = next(r for r in requirements if r.startswith("./"))
    own = documented.replace("./vsrife", f"./{ROOT.name}", 1)  # the clone's folder, under whatever name
    site = tmp_path / "site"
    result = run(PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), own, cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
    [metadata] = site.glob("vsrife-*.dist-info/METADATA")
    assert f"\nVersion: {__version__}\n" in metadata.read_text()


MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")


def markdown_prose(text: str) -> str:
    """A Markdown file without its fenced code blocks and inline code spans (where brackets are code)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def heading_slugs(text: str) -> set[str]:
    """GitHub's anchors for a file's headings: lower case, punctuation dropped, spaces to hyphens, a repeated
    slug numbered (-1, -2, …)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # `# comment` lines in code
    slugs: set[str] = set()
    for title in re.findall(r"^#{1,6} +(.+?)#*\s*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        numbered, n = slug, 0
        while numbered in slugs:
            n += 1
            numbered = f"{slug}-{n}"
        slugs.add(numbered)
    return slugs


def tracked(path: Path) -> bool:
    """Whether git tracks ``path`` (a file, or a folder holding tracked files). Outside a git checkout (the
    sdist, which carries README.md and docs/ as git has them) the file's existence stands in."""
    if not (ROOT / ".git").exists():
        return path.exists()
    result = run("git", "ls-files", "--error-unmatch", "--", str(path.relative_to(ROOT)), cwd=ROOT)
    return result.returncode == 0


def test_documentation_links_resolve_to_tracked_files_and_headings():
    """Every relative link in README.md and docs/*.md (``[text](path)``, ``[text](path#anchor)``, images and
    ``(#anchor)`` too) names a file git tracks, and an anchor names a heading of that file (GitHub's slug).
    The README stays a first screen, not the manual: at most 220 lines (issue 31 asks for about 200; the
    manual is in docs/)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked, broken = 0, []
    for page in pages:
        for target in MARKDOWN_LINK.findall(markdown_prose(page.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not this repository's
                continue
            name, _, anchor = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            checked += 1
            if not path.is_relative_to(ROOT) or not tracked(path):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no file git tracks)")
            elif anchor and (path.suffix != ".md" or anchor not in heading_slugs(path.read_text())):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {name or page.name})")
    assert checked >= len(pages), "the links were not found"
    assert not broken, "\n".join(broken)
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= 220, f"README.md has {lines} lines: move the detail to docs/"
