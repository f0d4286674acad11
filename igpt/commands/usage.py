"""`--help` of the config-file commands, answered before absl, jax or any config loads: the
usage, the shipped configs that command runs (read from their docstrings, nothing imported),
and how to see and override every config field."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

HELP_FLAGS = ("-h", "--help", "--helpshort")


def configs_dir() -> Path | None:
    """configs/ of the working directory (the repository root, where the README's commands run),
    else the one beside the installed igpt package (an editable install)."""
    for candidate in (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"):
        if candidate.is_dir():
            return candidate
    return None


def summary(doc: str) -> str:
    """A docstring's first paragraph, up to its first full stop or semicolon."""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return re.split(r"\.\s+(?=[A-Z])|; ", first)[0].rstrip(".")


def shipped_configs(command: str, directory: Path) -> list[tuple[str, str]]:
    """(the --config argument as the docstring gives it, relative to the working directory when
    the file lies below it, and the docstring's summary) of each config file whose docstring
    shows `command --config`."""
    found = []
    for path in sorted(directory.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        except SyntaxError:
            continue
        shown = re.search(rf"{re.escape(command)} --config (\S+)", doc)
        if shown:
            variant = shown.group(1).partition(":")[2]
            where = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            found.append((f"{where}{':' + variant if variant else ''}", summary(doc)))
    return found


def help_text(command: str, doc: str, overrides: str) -> str:
    """The command's docstring, its shipped configs, and how to see and override every field."""
    directory = configs_dir()
    configs = shipped_configs(command, directory) if directory else []
    width = max((len(p) for p, _ in configs), default=0)
    listed = [f"  {p.ljust(width)}  {line}" for p, line in configs] or ["  (none found: run from the repository root)"]
    example = configs[0][0] if configs else "configs/X.py"
    return "\n".join([
        doc.strip(), "",
        f"Shipped configs for {command} ({directory or 'configs/'}):", *listed, "",
        "Every config field and its value (nothing runs):",
        f"  {command} --config {example} --show_config",
        "Override any field on the command line; an unknown key is an error:",
        f"  {command} --config {example} --workdir runs/x {overrides}",
        "Flags: --config FILE[:ARG], --workdir DIR (local or gs://), --show_config; --helpfull lists absl's own.",
        ""])


def answer_help(command: str, doc: str, overrides: str, argv: list[str] | None = None) -> None:
    """Prints help_text (with `overrides` as the example of overrides) and exits 0 when argv asks
    for help; otherwise returns at once."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in HELP_FLAGS for a in argv):
        print(help_text(command, doc, overrides), end="")
        raise SystemExit(0)
