"""Every `radjepa …` command in the README names a real command and only flags that command accepts."""
import re
import shlex
from pathlib import Path

import typer

from radjepa_cli.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[str]:
    text = README.read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        cmds += [ln.split("#")[0].strip() for ln in block.splitlines()]
    cmds += re.findall(r"`(radjepa [^`]+)`", text)
    out = []
    for c in cmds:
        m = re.search(r"(?:^|\s)(radjepa\s.*|-m radjepa_cli\.cli\s.*)$", c)
        if m:
            out.append(re.sub(r"^-m radjepa_cli\.cli", "radjepa", m.group(1)).replace("\\|", "|"))
    return out


def test_readme_commands_exist_with_their_flags():
    root = typer.main.get_command(app)
    cmds = _commands()
    assert len(cmds) > 20
    for line in cmds:
        tokens = shlex.split(line)[1:]
        cmd, ctx_path = root, ["radjepa"]
        while hasattr(cmd, "commands") and tokens and tokens[0] in cmd.commands:
            cmd = cmd.commands[tokens[0]]
            ctx_path.append(tokens.pop(0))
        assert not hasattr(cmd, "commands") or not tokens or tokens[0].startswith("-"), \
            f"README: unknown command in {line!r}"
        known = {"--help"} | {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        for tok in tokens:
            if tok.startswith("--"):
                flag = tok.split("=")[0]
                assert flag in known, f"README: {' '.join(ctx_path)} has no option {flag} (in {line!r})"
