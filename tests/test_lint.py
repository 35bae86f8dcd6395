"""Habits the CI holds the code to: ruff (configured in pyproject.toml) on the Python code and
`snakemake --lint` on the rule files."""
import re
import subprocess
import sys

from conftest import REPO, copy_workflow, snakemake

# Snakemake's advice to give every rule a conda environment or container: this workflow runs in
# the environment its README installs (torch from local wheels on the 2-core machines).
ALLOWED = ("Specify a conda environment or container for each rule.",)


def lint_findings(text: str) -> list[tuple[str, str]]:
    """(where, title) of each finding in `snakemake --lint`'s text output."""
    out, where = [], None
    for line in text.splitlines():
        if line.startswith("Lints for "):
            where = line[len("Lints for "):].rstrip(":")
        elif where and re.match(r"^\s{4}\* ", line):
            out.append((where, line.strip()[2:].rstrip(":")))
    return out


def test_lint_parser_reads_snakemakes_format():
    text = ("Lints for snakefile /w/rules/sweep.smk:\n"
            "    * Path composition with '+' in line 21:\n      This becomes quickly unreadable.\n"
            "Lints for rule crf (line 4, /w/rules/crf.smk):\n"
            "    * Specify a conda environment or container for each rule.:\n      This way, ...\n")
    assert lint_findings(text) == [("snakefile /w/rules/sweep.smk", "Path composition with '+' in line 21"),
                                   ("rule crf (line 4, /w/rules/crf.smk)", ALLOWED[0])]


def test_snakemake_lint_clean(tmp_path):
    wf = copy_workflow(tmp_path)
    p = snakemake(wf, "--lint", check=False)
    findings = lint_findings(p.stdout + p.stderr)
    assert findings, "no lint output parsed: has Snakemake's format changed?\n" + (p.stdout + p.stderr)[-2000:]
    left = [f for f in findings if f[1] not in ALLOWED]
    assert not left, "\n".join(f"{w}: {t}" for w, t in left)


def test_ruff_clean():
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
