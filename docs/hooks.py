"""MkDocs hook: publish the figures recorded under benchmarks/recorded/ with the results pages.

The results pages (docs/results/) show figures that the studies write next to their recorded JSON in
benchmarks/recorded/; copying them into docs/ would keep two copies of every binary. This hook adds them to the
site as `recorded/...`, so a results page links `../recorded/STUDY/figure.png` and strict builds check the link.
"""
from pathlib import Path

from mkdocs.structure.files import File

RECORDED = Path(__file__).resolve().parent.parent / "benchmarks" / "recorded"


def on_files(files, config):
    for png in sorted(RECORDED.rglob("*.png")):
        uri = "recorded/" + png.relative_to(RECORDED).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files
